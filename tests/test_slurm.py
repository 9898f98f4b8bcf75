"""`snakemake --profile slurm` on a real one-node SLURM cluster (slurm/testbed), as users type it.

The cluster tests need root: slurm/testbed/start.sh installs Debian's slurm-wlm and munge when
missing and starts munged, slurmctld and slurmd on 127.0.0.1; the module's fixture stops them
afterwards. They run where the ``CI`` environment variable is set (``CI=1 make test``) and the
user is root, and there they are required: a cluster that cannot start (apt cannot install the
packages, the machine has a SLURM configuration of its own) fails them. Elsewhere they are
skipped with the reason. The dry-run tests of the profile run everywhere.
"""

import math
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT
from test_workflow import write_config

from segrobust.models.checkpoints import load_model

TESTBED = ROOT / "slurm" / "testbed"
TARGET = "results/evaluation/baseline/seed1/clean.csv"
TINY = {
    "data": {"synthetic": {"n_subjects": 8, "shape": [32, 32, 32], "spacing": [6.0, 6.0, 5.0]}},
    "preprocess": {"shape": [16, 16, 16]},
    "split": {"test_fraction": 0.25, "val_fraction": 0.1},
    "model": {"base_filters": 4, "depth": 3},
    "training": {"seeds": [1], "epochs": 3, "distillation": {"temperatures": []},
                 "adversarial": {"epsilons": []}, "pgd_adversarial": {"epsilons": []},
                 "noise": {"enabled": False}},
    "resources": {"gpu": 0, "train_mem_mb": 1000, "train_runtime": 10},
}  # fmt: skip
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+)")
NODE_CPUS = 2  # the test cluster's node: fewer CPUs than the profile's preprocessing group asks
SMALL_NODE = ("--resources", "preprocess_jobs=2")  # docs/slurm.md's setting for such nodes
# docs/slurm.md's example values: account, partition (partitions gpu and gpu-long exist there)
DOCUMENTED_ENV = {"SBATCH_ACCOUNT": "myproject", "SBATCH_PARTITION": "gpu"}
DOCUMENTED_OPTIONS = ("--set-resources", "train_model:slurm_partition=gpu-long")
# SLURM checks time limits every 30 s: a 1-minute job is killed 60-90 s after it starts. A job
# that ends after its limit but before that check is still a TIMEOUT (and its outputs are
# removed), so the first attempt must be sure not to finish (100 s of epochs at the fastest
# speed measured, at least) and the second sure to finish (a longer limit).
TIMEOUT_TRAINING_SECONDS = 100
TIME_LIMITS = "train_model:runtime=1 if attempt == 1 else 10"  # minutes


def clean_env() -> dict[str, str]:
    """This process's environment without SLURM's and sbatch's variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[dict[str, str]]:
    """Environment for commands that use the freshly started test cluster."""
    if os.environ.get("CI", "").lower() in ("", "0", "false", "no"):
        pytest.skip("the SLURM test cluster runs only where CI is set (CI=1 make test): it "
                    "installs slurm-wlm and munge with apt and starts daemons as root")  # fmt: skip
    if os.geteuid() != 0:
        pytest.skip("the SLURM test cluster needs root (it installs packages, starts daemons)")
    state = tmp_path_factory.mktemp("slurm-cluster")
    env = clean_env()
    ports = {"SLURMCTLD_PORT": str(free_port()), "SLURMD_PORT": str(free_port()),
             "TESTBED_CPUS": str(NODE_CPUS)}  # fmt: skip
    try:
        started = subprocess.run([TESTBED / "start.sh", str(state)], env={**env, **ports},
                                 capture_output=True, text=True, timeout=900)  # fmt: skip
        if started.returncode != 0:  # 4: packages cannot be installed; 5: a foreign SLURM
            pytest.fail(
                "CI is set and this is root, so the SLURM cluster tests are required, but "
                f"slurm/testbed/start.sh failed (exit {started.returncode}):\n"
                + started.stdout
                + started.stderr,
                pytrace=False,
            )
        yield {**env, "SLURM_CONF": str(state / "slurm.conf")}
    finally:
        subprocess.run([TESTBED / "stop.sh", str(state)], timeout=120, check=True)


def run_snakemake(workdir: Path, config: Path, target: str, *options: str, env: dict[str, str],
                  timeout: float, check: bool = True) -> subprocess.CompletedProcess:  # fmt: skip
    """Snakemake from the repository root on ``workdir``; the timeout bounds any hang."""
    cmd = [sys.executable, "-m", "snakemake", target, "-s", "Snakefile", "-d", str(workdir),
           "--configfile", str(config), *options]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)  # fmt: skip
    assert not check or result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result


def slurm_options(logdir: Path, *small_node: str) -> list[str]:
    """What the test adds to the profile: the test cluster has no accounting, waits short and
    (``small_node``) docs/slurm.md's setting for nodes with fewer than 4 CPUs."""
    return [
        "--profile", "slurm",  # resolved as ./slurm from the repository root
        "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "2",  # MinJobAge 300 >= 3 x 2
        "--seconds-between-status-checks", "1",
        "--slurm-logdir", str(logdir),
        *small_node,
    ]  # fmt: skip


def slurm_jobs(result: subprocess.CompletedProcess, env: dict[str, str]) -> pd.DataFrame:
    """The SLURM jobs a Snakemake run submitted: id, partition, state, CPUs, comment (rule)."""
    ids = SUBMITTED.findall(result.stdout + result.stderr)
    assert ids, "no job was submitted through sbatch"
    listing = subprocess.run(
        ["squeue", "--states=all", "--noheader", "-j", ",".join(ids), "-o",
         "%i|%P|%T|%C|%k|%j|%a"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = [line.split("|") for line in listing.stdout.splitlines()]
    columns = ["id", "partition", "state", "cpus", "comment", "name", "account"]
    jobs = pd.DataFrame(rows, columns=columns)
    return jobs.astype({"id": int, "cpus": int}).sort_values("id", ignore_index=True)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    return write_config(tmp_path_factory.mktemp("config") / "tiny.yaml", **TINY)


@pytest.fixture(scope="module")
def slurm_run(cluster, config, tmp_path_factory):
    """The tiny config's baseline training and clean evaluation through sbatch."""
    workdir = tmp_path_factory.mktemp("slurm-run")
    env = {**cluster, **DOCUMENTED_ENV}
    options = slurm_options(workdir / "slurm-logs", *SMALL_NODE, *DOCUMENTED_OPTIONS)
    result = run_snakemake(workdir, config, TARGET, *options, env=env, timeout=600)
    return workdir, slurm_jobs(result, cluster)


@pytest.fixture(scope="module")
def local_run(config, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("local-run")
    run_snakemake(workdir, config, TARGET, "--cores", "2", env=clean_env(), timeout=600)
    return workdir


def dry_run(workdir: Path, env: dict[str, str], *options: str) -> str:
    """Output of a dry run of the default config with the profile."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--profile", "slurm", "-d", str(workdir),
           "--configfile", str(ROOT / "config" / "config.yaml"), *options]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Using profile slurm" in result.stdout + result.stderr
    return result.stdout + result.stderr


def planned(output: str, field: str) -> dict[str, set[str]]:
    """Rule -> the values of ``field`` (resources: one entry per name=value) of its jobs."""
    found: dict[str, set[str]] = {}
    for block in re.split(r"^(?=\s*(?:local)?rule \w+:$)", output, flags=re.MULTILINE):  # per job
        rule = re.match(r"\s*(?:local)?rule (\w+):$", block, re.MULTILINE)
        values = re.search(rf"^\s+{field}: (.*)$", block, re.MULTILINE)
        if rule and values:
            found.setdefault(rule[1], set()).update(values[1].split(", "))
    return found


def planned_resources(workdir: Path, env: dict[str, str]) -> dict[str, set[str]]:
    """Rule -> resources of its jobs, from a dry run of the default config with the profile."""
    return planned(dry_run(workdir, env), "resources")


def readme_resources() -> dict[str, list[str]]:
    """Rule -> [CPUs, memory (MB), time (min), GPUs] from docs/slurm.md's resource table."""
    section = (ROOT / "docs" / "slurm.md").read_text()
    table = section.split("| rule | CPUs | memory (MB) | time (min) | GPUs |")[1].split("\n\n")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    return {rule: row[1:5] for row in rows for rule in re.findall(r"`(\w+)`", row[0])}


GPU_RULES = {"train_model", "evaluate_clean", "attack", "audit_gradients"}


def test_documented_resource_table_is_what_the_rules_ask_for(tmp_path):
    output = dry_run(tmp_path, clean_env())
    resources, threads = planned(output, "resources"), planned(output, "threads")
    readme = readme_resources()
    assert set(readme) == set(resources) - {"all"}  # every submitted rule, nothing else
    for rule, (cpus, mem_mb, runtime, gpus) in readme.items():
        values = {}
        for item in resources[rule]:
            name, value = item.split("=", 1)
            values.setdefault(name, set()).add(value)
        assert threads.get(rule, {"1"}) == {cpus}, rule  # a dry run omits threads: 1
        assert values["mem_mb"] == {mem_mb} and values["runtime"] == {runtime}, (rule, values)
        assert values.get("gpu", {"0"}) == {gpus}, (rule, values)


def test_resources_mem_mb_on_the_command_line_is_warned_about(tmp_path):
    output = dry_run(tmp_path, clean_env(), "--resources", "mem_mb=8000")
    assert "--resources mem_mb lowers every job's memory request (training too)" in output
    assert planned(output, "resources")["train_model"] >= {"mem_mb=8000"}  # not 16000
    assert "lowers every job" not in dry_run(tmp_path, clean_env())


def test_profile_takes_account_partition_and_gpu_model_from_the_environment(tmp_path):
    env = {**clean_env(), "SBATCH_ACCOUNT": "proj1", "SBATCH_PARTITION": "long",
           "SEGROBUST_GPU_MODEL": "a100"}  # fmt: skip
    planned = planned_resources(tmp_path, env)
    assert GPU_RULES | {"preprocess_subject", "split", "tables"} <= planned.keys()
    for rule, resources in planned.items():
        assert {"slurm_account=proj1", "slurm_partition=long"} <= resources, (rule, resources)
        assert ("gpu_model=a100" in resources) == (rule in GPU_RULES), (rule, resources)
        names = {r.split("=")[0] for r in resources}
        assert {"mem_mb", "runtime"} <= names, (rule, resources)


def test_profile_without_environment_leaves_account_partition_to_the_plugin(tmp_path):
    planned = planned_resources(tmp_path, clean_env())
    names = {r.split("=")[0] for resources in planned.values() for r in resources}
    assert not names & {"slurm_account", "slurm_partition", "gpu_model", "cpus_per_task"}
    assert {"gpu=1"} <= planned["train_model"] and "gpu=1" not in planned["split"]
    assert not (ROOT / "profiles" / "default").exists()  # would override this profile per key


@pytest.mark.slow
def test_profile_defaults_on_a_2_cpu_node_stop_before_submitting_and_say_what_to_set(
    cluster, config, tmp_path
):
    options = slurm_options(tmp_path / "slurm-logs")
    result = run_snakemake(tmp_path, config, TARGET, *options, env=cluster, timeout=120,
                           check=False)  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0 and not SUBMITTED.search(output), output
    assert "preprocess asks for 4 CPUs" in output, output
    assert f"partition 'main' have {NODE_CPUS} CPUs" in output
    assert "--resources preprocess_jobs=N" in output


@pytest.mark.slow
def test_every_job_went_through_sbatch_with_the_documented_examples(slurm_run):
    _, jobs = slurm_run
    assert set(jobs["comment"]) == {
        "rule_synthesize_cohort",
        "rule_split",
        "rule_preprocess_preprocess_subject",  # one group job for all 8 subjects
        "rule_train_model_wildcards_baseline_1",
        "rule_evaluate_clean_wildcards_baseline_1",
    }
    assert len(jobs) == 5
    assert (jobs["state"] == "COMPLETED").all(), jobs
    assert jobs["name"].str.startswith("segrobust_").all(), jobs
    assert (jobs["account"] == "myproject").all(), jobs
    train = jobs["comment"] == "rule_train_model_wildcards_baseline_1"
    assert (jobs.loc[train, "partition"] == "gpu-long").all(), jobs
    assert (jobs.loc[~train, "partition"] == "gpu").all(), jobs
    # cpus = threads (1), the group job's = preprocess_jobs (subjects at once)
    group = jobs["comment"] == "rule_preprocess_preprocess_subject"
    assert (jobs.loc[~group, "cpus"] == 1).all() and (jobs.loc[group, "cpus"] == 2).all(), jobs


@pytest.mark.slow
def test_slurm_results_equal_a_local_run(slurm_run, local_run):
    slurm, local = slurm_run[0] / "results", local_run / "results"
    assert (slurm / "split.csv").read_bytes() == (local / "split.csv").read_bytes()
    arrays = sorted(p.relative_to(local) for p in (local / "preprocessed").rglob("*.npy"))
    assert len(arrays) == 8 * 3
    for path in arrays:
        assert np.array_equal(np.load(slurm / path), np.load(local / path)), path
    model = Path("models/baseline/seed1/model.pt")
    slurm_weights = load_model(slurm / model)[0].state_dict()
    for name, tensor in load_model(local / model)[0].state_dict().items():
        assert torch.equal(slurm_weights[name], tensor), name
    clean = Path("evaluation/baseline/seed1/clean.csv")
    pd.testing.assert_frame_equal(pd.read_csv(slurm / clean), pd.read_csv(local / clean))


@pytest.mark.slow
def test_training_killed_at_its_time_limit_resumes_from_its_checkpoint(
    slurm_run, cluster, tmp_path
):
    """A 1-minute limit on a 2-minute training: TIMEOUT, resubmission, resume, completion."""
    workdir = tmp_path / "work"
    shutil.copytree(slurm_run[0], workdir)  # data, split and Snakemake's records: no rerun
    log = pd.read_csv(workdir / "results/models/baseline/seed1/training_log.csv")
    epochs = math.ceil(TIMEOUT_TRAINING_SECONDS / log["seconds"].min())
    longer = {**TINY, "training": {**TINY["training"], "epochs": epochs}}
    config = write_config(tmp_path / "long.yaml", **longer)

    options = [*slurm_options(tmp_path / "slurm-logs", *SMALL_NODE), "--set-resources", TIME_LIMITS]
    result = run_snakemake(workdir, config, "results/models/baseline/seed1/model.pt", *options,
                           env=cluster, timeout=600)  # fmt: skip
    jobs = slurm_jobs(result, cluster)
    assert set(jobs["comment"]) == {"rule_train_model_wildcards_baseline_1"}
    assert jobs["state"].tolist() == ["TIMEOUT", "COMPLETED"], jobs

    rule_log = (workdir / "results/logs/train_model/baseline/seed1.log").read_text()
    resumed = [
        int(e) for e in re.findall(r"resuming \S+baseline/seed1\.ckpt after epoch (\d+)", rule_log)
    ]
    assert resumed and 0 < resumed[0] < epochs, rule_log[-2000:]
    log = pd.read_csv(workdir / "results/models/baseline/seed1/training_log.csv")
    assert log["epoch"].tolist() == list(range(1, epochs + 1))
    assert not (workdir / "results/checkpoints/baseline/seed1.ckpt").exists()

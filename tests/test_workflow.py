"""The real Snakefile on small configs, in temporary working directories."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, write_brats_subject
from scipy import stats
from scipy.stats import wilcoxon
from snakemake.utils import validate
from statsmodels.stats.multitest import multipletests

import segrobust
from segrobust.models.checkpoints import load_model
from segrobust.tables import model_label


def snakemake(
    workdir: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run the project's Snakefile with ``workdir`` as working directory (``env``: added)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir)]
    result = subprocess.run([*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=2400,
                            env={**os.environ, **(env or {})})  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {args} failed:\n{result.stdout}\n{result.stderr}")
    return result


def write_config(path: Path, base: str = "config.yaml", **sections) -> Path:
    """A config file: ``base`` from config/ with ``sections`` merged in (one level deep)."""
    config = yaml.safe_load((ROOT / "config" / base).read_text())
    for key, value in sections.items():
        if isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    path.write_text(yaml.safe_dump(config))
    return path


def planned_fields(result: subprocess.CompletedProcess, rule: str, pattern: str) -> list[str]:
    """The match of ``pattern`` (one regex group) in the details of each job of ``rule``."""
    return re.findall(rf"rule {rule}:\n(?:    .*\n)*?    {pattern}", result.stdout)


def planned_models(result: subprocess.CompletedProcess, rule: str) -> set[str]:
    """The ``model`` wildcard of every job of ``rule`` in a dry run."""
    return set(planned_fields(result, rule, r"wildcards: model=([^,\s]+)"))


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Job counts per rule from the table a dry run prints."""
    counts, table = {}, False
    for line in result.stdout.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            table = True
        elif table and len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            counts[parts[0]] = int(parts[1])
        elif table and parts[:1] == ["total"]:
            break
    return counts


def test_lint_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dry_run_of_the_paper_config_on_a_fake_brats_tree(tmp_path):
    root = tmp_path / "Brats17"
    for i in range(10):
        write_brats_subject(root, f"Brats17_F{i:02d}_1", "HGG" if i < 7 else "LGG")
    configs = [str(ROOT / "config" / name) for name in ("brats2017.yaml", "no_gpu.yaml")]
    result = snakemake(
        tmp_path, "-n", "--configfile", *configs, "--config", f"data={{root: {root}}}"
    )
    jobs = planned_jobs(result)
    assert jobs["preprocess_subject"] == 10
    assert "synthesize_cohort" not in jobs
    gpus = planned_fields(result, "train_model", r"resources: .*gpu=(\d+)")
    assert len(gpus) == jobs["train_model"] and set(gpus) == {"0"}  # the README's no-GPU overlay


CONFIG_OF_A_RUN = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
snakefile, workdir = Path(sys.argv[1]), Path(sys.argv[2])
configfiles, config = json.loads(sys.argv[3]), json.loads(sys.argv[4])
with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
    settings = ConfigSettings(configfiles=[Path(f) for f in configfiles], config=config)
    workflow = api.workflow(ResourceSettings(), settings, snakefile=snakefile, workdir=workdir)
    print("CONFIG", json.dumps(workflow._workflow.config))
"""


def config_of_a_run(workdir: Path, configfiles: list[Path], config: dict | None = None) -> dict:
    """The config the Snakefile ends up with (after its schema validation), as Snakemake builds
    it from ``--configfile`` files and ``--config`` values, through Snakemake's own API."""
    args = [str(ROOT / "Snakefile"), str(workdir), json.dumps(list(map(str, configfiles))),
            json.dumps(config or {})]  # fmt: skip
    out = subprocess.run([sys.executable, "-c", CONFIG_OF_A_RUN, *args], capture_output=True,
                         text=True, check=True, cwd=workdir).stdout  # fmt: skip
    return json.loads(out.split("CONFIG ", 1)[1])


def leaves(config: dict, prefix: str = "") -> dict[str, object]:
    """Every leaf of a nested config as {"a.b.c": value}."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out |= leaves(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def with_schema_defaults(config: dict) -> dict:
    config = json.loads(json.dumps(config))
    validate(config, str(ROOT / "config" / "schema.yaml"))  # fills in the defaults
    return config


def test_paper_config_is_its_own_file_and_the_schema_defaults_only(tmp_path):
    root = tmp_path / "Brats17"
    for i in range(10):  # the paper's split fractions need 10
        write_brats_subject(root, f"Brats17_F{i:02d}_1", "HGG" if i < 7 else "LGG")
    (tmp_path / "config").mkdir()  # run from a checkout: the demo config is there
    shutil.copy(ROOT / "config" / "config.yaml", tmp_path / "config" / "config.yaml")
    paper = yaml.safe_load((ROOT / "config" / "brats2017.yaml").read_text())
    paper["data"]["root"] = str(root)
    got = leaves(config_of_a_run(tmp_path, [ROOT / "config" / "brats2017.yaml"],
                                 {"data": {"root": str(root)}}))  # fmt: skip
    want = leaves(with_schema_defaults(paper))
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key] == value, key
    demo = leaves(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    unset = {k for k in demo if k not in leaves(paper)}  # demo keys the paper config leaves out
    assert {"training.seeds", "attacks.pgd.restarts", "attacks.pgd_large.steps"} <= unset
    assert not any(got[k] == demo[k] != want[k] for k in unset)  # no demo value leaked in


def test_the_paper_texts_defence_sweep_is_the_one_line_of_the_fidelity_note(tmp_path):
    """docs/paper-fidelity.md: the configs sweep ε 0.01..0.1 (Table 2's reading); its YAML line
    appended to the paper config adds the text's 0.001..0.010 and keeps Table 2's budgets."""
    note = (ROOT / "docs" / "paper-fidelity.md").read_text()
    (line,) = re.findall(r"```yaml\n(.*)\n```", note)
    root = tmp_path / "Brats17"
    for i in range(10):
        write_brats_subject(root, f"Brats17_F{i:02d}_1", "HGG" if i < 7 else "LGG")
    paper = (ROOT / "config" / "brats2017.yaml").read_text()
    (tmp_path / "text.yaml").write_text(f"{paper}\n{line}\n")
    data = {"data": {"root": str(root)}}
    tables = config_of_a_run(tmp_path, [ROOT / "config" / "brats2017.yaml"], data)
    text = config_of_a_run(tmp_path, [tmp_path / "text.yaml"], data)
    steps = [round(0.01 * k, 2) for k in range(1, 11)]
    assert tables["attacks"]["fgsm"]["epsilons"] == steps
    assert (
        text["attacks"]["fgsm"]["epsilons"] == [round(0.001 * k, 3) for k in range(1, 10)] + steps
    )
    assert set(text["statistics"]["table2_eps"]) - {0} <= set(steps)
    text["attacks"]["fgsm"] = tables["attacks"]["fgsm"]
    assert text == tables  # nothing else changes


def test_without_a_configfile_the_run_is_the_demo(tmp_path):
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config" / "config.yaml", tmp_path / "config" / "config.yaml")
    demo = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    assert config_of_a_run(tmp_path, []) == with_schema_defaults(demo)
    overlay = [ROOT / "config" / "config.yaml", ROOT / "config" / "no_gpu.yaml"]
    assert config_of_a_run(tmp_path, overlay)["resources"]["gpu"] == 0


@pytest.mark.slow
def test_replaced_raw_file_reruns_its_subject_and_a_bad_one_fails_on_the_console(tmp_path):
    root = tmp_path / "Brats17"
    paths = [
        write_brats_subject(root, f"Brats17_F{i:02d}_1", "HGG" if i < 7 else "LGG", seed=i)
        for i in range(10)
    ]
    config = write_config(tmp_path / "c.yaml", "brats2017.yaml", data={"root": str(root)},
                          preprocess={"shape": [16, 16, 16], "n4": {"enabled": False}})  # fmt: skip
    work, results = tmp_path / "work", "results/brats2017"
    target = f"{results}/preprocessed/Brats17_F00_1/image.npy"
    first = snakemake(work, target, "--cores", "1", "--configfile", str(config))
    assert "only 2 test subjects" in first.stderr  # said up front: too few for the statistics
    manifest = pd.read_csv(work / results / "raw_manifest.tsv", sep="\t")
    assert len(manifest) == 50 and manifest["sha256"].str.fullmatch("[0-9a-f]{64}").all()
    assert "Nothing to be done" in snakemake(work, "-n", target, "--configfile", str(config)).stdout

    # another file with the old mtime (a restored backup): Snakemake's mtime check misses it
    t1 = paths[0]["t1"]
    stat = t1.stat()
    t1.write_bytes(paths[1]["t1"].read_bytes())
    os.utime(t1, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    replanned = snakemake(work, "-n", target, "--configfile", str(config))
    assert planned_jobs(replanned) == {"preprocess_subject": 1}
    assert "Params have changed since last execution" in replanned.stdout

    seg = paths[2]["seg"]
    nib.save(nib.Nifti1Image(np.full((20, 20, 16), 3, np.uint8), nib.load(seg).affine), seg)
    bad = f"{results}/preprocessed/Brats17_F02_1/image.npy"
    failed = snakemake(work, bad, "--cores", "1", "--configfile", str(config), check=False)
    assert failed.returncode != 0
    assert f"{seg}: 6400 of 6400 voxels have values outside" in failed.stderr  # not only in the log


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"unknown_key": 1}, "unknown_key"),
        ({"split": {"test_fraction": 1.5}}, "1.5"),
        ({"preprocess": {"shape": [32, 32]}}, "shape"),
        ({"data": {"source": "brats", "root": None}}, "root"),
        ({"seed": "abc"}, "abc"),
        ({"attacks": {"fgsm": {"epsilons": [-0.05]}}}, "-0.05"),
        ({"training": {"adversarial": {"epsilons": [-0.01]}}}, "-0.01"),
        ({"training": {"adversarial": {"example_mode": "dropout"}}}, "dropout"),
        ({"training": {"pgd_adversarial": {"steps": 0}}}, "steps"),
        ({"training": {"pgd_adversarial": {"step_size": 0}}}, "step_size"),
        ({"training": {"pgd_adversarial": {"epsilons": [1.5]}}}, "1.5"),
        ({"statistics": {"table1_iteration": 30}}, "statistics.table1_iteration = 30 exceeds"),
        ({"split": {"val_fraction": 0.01}}, "split.val_fraction = 0.01 puts none of the 60"),
        (
            {"training": {"patience": 3}, "split": {"val_fraction": 0}},
            "training.patience = 3 stops training on validation Dice, but split.val_fraction = 0",
        ),
        ({"data": {"source": "brats", "root": "/", "layout": "brats2019"}}, "brats2019"),
        ({"data": {"synthetic": {"shape": [32, 32, 32]}}}, "data.synthetic (anatomy: template)"),
        (
            {"statistics": {"primary": {"attack": "ifgsm"}}},
            "statistics.primary.attack = ifgsm is in attacks.baseline_only",
        ),
        (
            {"statistics": {"primary": {"eps": 0.03}}},
            "statistics.primary.eps = 0.03 is not a budget pgd runs at",
        ),
        ({"statistics": {"primary": {"metric": "hd95"}}}, "hd95"),
    ],
)
def test_bad_config_stops_with_the_key_named(tmp_path, sections, message):
    config = write_config(tmp_path / "c.yaml", **sections)
    result = snakemake(tmp_path, "-n", "--configfile", str(config), check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_missing_data_root_is_named(tmp_path):
    config = write_config(
        tmp_path / "c.yaml", "brats2017.yaml", data={"root": str(tmp_path / "absent")}
    )
    result = snakemake(tmp_path, "-n", "--configfile", str(config), check=False)
    assert result.returncode != 0
    assert "absent does not exist" in result.stdout + result.stderr


def _checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


TINY = {
    "data": {"synthetic": {"n_subjects": 12, "shape": [32, 32, 32], "spacing": [6.0, 6.0, 5.0]}},
    "preprocess": {"shape": [16, 16, 16]},
    "split": {"test_fraction": 0.34, "val_fraction": 0.1},
    "model": {"base_filters": 4, "depth": 3},
    "training": {"seeds": [1, 2], "epochs": 2, "distillation": {"temperatures": [20]},
                 "patience": 1, "adversarial": {"epsilons": [0.05]},
                 "pgd_adversarial": {"epsilons": [0.05], "steps": 2}},
    "attacks": {
        "fgsm": {"epsilons": [0.03, 0.05, 0.1]},
        "fgsm_T": {"epsilons": [0.05]},
        "transfer_fgsm": {"epsilons": [0.05]},
        "ifgsm": {"steps": 3},
        "tifgsm": {"steps": 3},
        "pgd": {"steps": 2, "restarts": 1},
        "segpgd": {"steps": 2},
        "pgd_large": {"alpha": 0.25, "steps": 2},
        "realistic": {"severities": [1, 3]},
        "examples": {"n_subjects": 1},
    },
    "statistics": {"n_boot": 200, "table1_iteration": 2},  # an intermediate iterate
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The whole DAG on a tiny synthetic config (6 models × 2 seeds, every attack family)."""
    workdir = tmp_path_factory.mktemp("tiny")
    config = write_config(workdir / "c.yaml", **TINY)
    snakemake(workdir, "--cores", "2", "--configfile", str(config))
    return workdir, config


@pytest.mark.slow
def test_whole_dag_writes_every_output_and_plans_nothing_after(tiny_run):
    workdir, config = tiny_run
    results = workdir / "results"
    split = pd.read_csv(results / "split.csv")
    assert len(split) == 12 and set(split["split"]) == {"train", "val", "test"}
    assert len(list((results / "preprocessed").glob("*/image.npy"))) == 12
    table = pd.read_csv(results / "results.csv")
    models = {"baseline", "distill_T20", "adv_eps0.05", "pgdadv_eps0.05", "noise"}
    assert set(table["model"]) == models
    assert (table.groupby("model")["seed"].unique().apply(sorted) == [[1, 2]] * 5).all()
    assert set(table["precision"]) == {"fp32"} and set(table["kernel"]) == {"onednn"}
    per_model = table.groupby("model")["attack"].unique().apply(set).to_dict()
    assert "fgsm_T" in per_model["distill_T20"] and "fgsm_T" not in per_model["baseline"]
    assert "transfer_fgsm" not in per_model["baseline"]
    assert (table.loc[table["attack"] == "transfer_fgsm", "source_model"] == "baseline").all()
    n_test = (split["split"] == "test").sum()
    assert (table.groupby(["model", "seed", "attack", "eps", "iteration", "severity", "region"],
                          dropna=False).size() == n_test).all()  # fmt: skip
    for name in ("fig1", "fig2", "supp_fig2", "fig3", "fig4", "fig5", "robustness", "realistic"):
        assert (results / "figures" / f"{name}.png").stat().st_size > 10_000
        assert (results / "figures" / f"{name}.pdf").exists()
    for name in ("table1", "table2"):
        for ext in ("csv", "md", "tex"):
            assert (results / "tables" / f"{name}.{ext}").stat().st_size > 100
    table1 = pd.read_csv(results / "tables" / "table1.csv").set_index("attack")
    assert table1.loc[["ifgsm", "tifgsm"], "iteration"].tolist() == [2, 2]
    assert table1.drop(index="none")["ssim_mean"].between(0, 1).all()  # every attack row
    assert {"random_sign", "pgd_large"} <= per_model["noise"]  # the audit's controls
    audit = pd.read_csv(results / "tables" / "audit.csv")
    assert set(audit["model"]) == models and set(audit["status"]) <= {"pass", "flag", "n.a."}
    assert len(list((results / "audit").glob("*/seed*/gradients.csv"))) == 10
    worst = pd.read_csv(results / "tables" / "worst_case.csv")
    assert set(worst["seed"].astype(str)) == {"1", "2", "all"}
    for model in models:
        assert (results / "figures" / "worst_case" / f"{model}.png").stat().st_size > 10_000
    # HD95 / NSD on every row but the i-FGSM / ti-FGSM iterates Table 1 does not report
    skipped = table["attack"].isin(["ifgsm", "tifgsm"]) & (table["iteration"] != 2)
    assert table.loc[skipped, ["hd95", "nsd"]].isna().all().all() and skipped.any()
    kept = table[~skipped]
    assert (kept["hd95"] >= 0).all() and kept["nsd"].between(0, 1).all()
    assert table1[[f"hd95_{r}_mean" for r in ("WT", "TC", "ET")]].notna().all().all()
    # every model records its stopping rule and keeps its best epoch (first best mean val Dice)
    trained = list((results / "models").glob("*/seed*/model.pt"))
    assert len(trained) == 12  # the 5 models and the teacher, 2 seeds each
    for path in trained:
        stopping = load_model(path)[1]["stopping"]
        log = pd.read_csv(path.with_name("training_log.csv"))
        assert (stopping["rule"], stopping["stopped_epoch"]) == ("patience", len(log)), path
        best = int(log["val_dice_mean"].idxmax()) + 1
        assert stopping["weights_epoch"] == log["best_epoch"].iloc[-1] == best, path
    assert planned_jobs(snakemake(workdir, "-n", "--configfile", str(config))) == {}


@pytest.mark.slow
def test_report_bundles_tables_and_figures_with_captions(tiny_run):
    workdir, config = tiny_run
    report = workdir / "report.html"
    snakemake(workdir, "--configfile", str(config), "--report", str(report))
    html = report.read_text()
    assert "an axial slice" in html and "Table 1 (paper layout)" in html
    assert "snakemake.config" not in html  # captions rendered, not shown as templates


@pytest.mark.slow
def test_table_pvalues_equal_an_independent_recomputation(tiny_run):
    workdir, _ = tiny_run
    results = pd.read_csv(workdir / "results" / "results.csv")
    tests = pd.read_csv(workdir / "results" / "tables" / "table1_tests.csv")
    clean = results[(results["model"] == "baseline") & (results["attack"] == "none")]
    attacked = results[(results["model"] == "baseline") & (results["attack"] == "fgsm")
                       & np.isclose(results["eps"], 0.05)]  # fmt: skip
    raw = []
    for region in ("TC", "ET", "WT"):  # the paper's test on per-subject Dice averaged over seeds
        ref = clean[clean["region"] == region].groupby("subject")["dice"].mean()
        cond = attacked[attacked["region"] == region].groupby("subject")["dice"].mean()
        diff = (cond - ref.loc[cond.index]).to_numpy()
        expected = 1.0 if (diff == 0).all() else wilcoxon(diff).pvalue
        row = tests[(tests["region"] == region) & (tests["attack"] == "fgsm")]
        assert row["p"].item() == pytest.approx(expected, rel=1e-9)
        raw.append(row)
    all_p = tests["p"].fillna(1.0).to_numpy()
    adjusted = multipletests(all_p, method="bonferroni")[1]
    assert tests["p_adj"].fillna(1.0).to_numpy() == pytest.approx(adjusted)


@pytest.mark.slow
def test_primary_analysis_equals_a_recomputation_and_the_summary_shows_it(tiny_run):
    workdir, _ = tiny_run
    results = pd.read_csv(workdir / "results" / "results.csv")
    primary = pd.read_csv(workdir / "results" / "tables" / "primary.csv").set_index("model")
    assert set(primary.index) == {"distill_T20", "adv_eps0.05", "pgdadv_eps0.05", "noise"}
    assert (primary["attack"] == "pgd").all() and (primary["reference"] == "baseline").all()
    white_box = results["source_model"] == results["model"]
    pgd = results[(results["attack"] == "pgd") & white_box]
    dice = pgd.groupby(["model", "seed", "subject"])["dice"].mean()  # over WT, TC, ET
    summary = (workdir / "results" / "summary.md").read_text()
    lines = summary.split("## Primary analysis")[1].splitlines()
    for model, row in primary.iterrows():
        diff = (dice[model] - dice["baseline"]).unstack("subject")
        assert row["delta"] == pytest.approx(diff.to_numpy().mean())
        by_subject = diff.mean(axis=0)  # the subjects-only paired t interval is never wider
        paired = stats.ttest_1samp(by_subject, 0).confidence_interval(0.95)
        assert row["ci_high"] - row["ci_low"] >= paired.high - paired.low - 1e-12
        shown = [line for line in lines if line.startswith(f"| {model_label(model)} ")]
        assert len(shown) == 1 and f"| {row['delta']:+.3f} " in shown[0]
    assert primary["p_holm"].to_numpy() == pytest.approx(
        multipletests(primary["p"], method="holm")[1]
    )
    assert set(primary["verdict"]) <= {"better", "worse", "inconclusive"}
    assert "## Primary analysis: PGD at ε = 0.05, dice_mean" in summary
    assert "Seed planner (segrobust.planner): to detect Δ = 0.03" in summary


@pytest.mark.slow
def test_attack_config_change_replans_only_attacks_and_reports(tiny_run, tmp_path):
    workdir, _ = tiny_run
    changed = dict(TINY, attacks={**TINY["attacks"], "fgsm": {"epsilons": [0.03, 0.05, 0.08]}})
    config = write_config(tmp_path / "c.yaml", **changed)
    result = snakemake(workdir, "-n", "--configfile", str(config))
    jobs = planned_jobs(result)
    assert set(jobs) == {
        "attack", "collect_results", "tables", "replicates", "summary", "figure", "audit",
        "worst_case", "worst_case_figure", "all",
    }  # fmt: skip
    # the fgsm sweep of each model and seed, nothing else (the demo's random-sign control has
    # its own ε list, attacks.random_sign.epsilons)
    assert planned_fields(result, "attack", r"wildcards: .*attack=(\w+)") == ["fgsm"] * 10


@pytest.mark.slow
def test_new_distillation_temperature_trains_only_that_temperature(tiny_run, tmp_path):
    workdir, _ = tiny_run
    training = {**TINY["training"], "distillation": {"temperatures": [20, 50]}}
    config = write_config(tmp_path / "c.yaml", **dict(TINY, training=training))
    result = snakemake(workdir, "-n", "--configfile", str(config))
    jobs = planned_jobs(result)
    assert planned_models(result, "train_model") == {"teacher_T50", "distill_T50"}
    assert jobs["train_model"] == 4  # two seeds each
    assert "preprocess_subject" not in jobs and jobs["evaluate_clean"] == 2


def rules_with_changed_params(workdir: Path, config: Path, env: dict[str, str]) -> set[str]:
    """Rules whose jobs' params changed, each judged on its own. A dry run compares a job's
    params only where no job upstream of it runs (a job below one that runs is planned for its
    input), so the rules found are taken out of the plan (``--allowed-rules``) and the dry run
    is repeated until it finds no more."""
    every = set(snakemake(workdir, "--list-rules", "--configfile", str(config)).stdout.split())
    found: set[str] = set()
    while True:
        planned = snakemake(workdir, "-n", "--allowed-rules", *sorted(every - found),
                            "--configfile", str(config), env=env).stdout  # fmt: skip
        new = set(re.findall(r"rule (\w+):\n(?:    .*\n)*?    reason: .*Params have changed",
                             planned))  # fmt: skip
        if not new - found:
            return found
        found |= new


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "rules"),
    [
        # kernels runs every float32 CPU convolution and its gradients; the registry imports it,
        # and so does the figure script (through evaluation, for Fig. 5's saved examples)
        ("models/kernels", {"train_model", "evaluate_clean", "attack", "audit_gradients",
                            "figure"}),
        ("plots", {"figure", "worst_case_figure"}),
        ("replicates", {"replicates"}),
    ],
)  # fmt: skip
def test_a_module_edit_changes_the_code_param_of_exactly_the_jobs_whose_scripts_import_it(
    tiny_run, tmp_path, module, rules
):
    workdir, config = tiny_run
    core = tmp_path / "segrobust"  # an edited copy of the core, first on the import path
    shutil.copytree(Path(segrobust.__file__).parent, core)
    with open(core / f"{module}.py", "a") as stream:
        stream.write("\n# an edit\n")
    assert rules_with_changed_params(workdir, config, {"PYTHONPATH": str(tmp_path)}) == rules
    assert not rules_with_changed_params(workdir, config, {})  # the unedited core: none


@pytest.mark.slow
def test_checkpoints_of_finished_models_are_removed_once_the_workflow_succeeds(tiny_run):
    workdir, config = tiny_run
    checkpoints = workdir / "results" / "checkpoints"
    assert not list(checkpoints.glob("*"))
    finished = checkpoints / "baseline" / "seed1.ckpt"
    unfinished = checkpoints / "adv_eps0.05" / "seed3.ckpt"  # no such replicate trained
    for path in (finished, unfinished):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    (workdir / "results" / "tables" / "table1.md").unlink()  # one quick job to run
    snakemake(workdir, "--cores", "1", "--configfile", str(config))
    assert not finished.exists() and unfinished.exists()  # no model.pt: may still resume
    assert not finished.parent.exists()  # no empty folder left behind
    unfinished.unlink()


@pytest.mark.slow
def test_same_seed_gives_identical_raw_data_and_split(tiny_run, tmp_path):
    workdir, config = tiny_run
    raw = _checksums(workdir / "results" / "raw")
    assert len(raw) == 12 * 5
    snakemake(tmp_path, "--cores", "2", "--configfile", str(config), "--until", "split")
    assert _checksums(tmp_path / "results" / "raw") == raw
    split = (workdir / "results" / "split.csv").read_bytes()
    assert (tmp_path / "results" / "split.csv").read_bytes() == split

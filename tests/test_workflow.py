"""The real Snakefile on small configs, in temporary working directories."""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, write_brats_subject


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the project's Snakefile with ``workdir`` as working directory."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir)]
    result = subprocess.run([*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
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
    for i in range(6):
        write_brats_subject(root, f"Brats17_F{i:02d}_1", "HGG" if i < 4 else "LGG")
    config = write_config(tmp_path / "c.yaml", "brats2017.yaml", data={"root": str(root)})
    result = snakemake(tmp_path, "-n", "--configfile", str(config))
    jobs = planned_jobs(result)
    assert jobs["preprocess_subject"] == 6
    assert "synthesize_cohort" not in jobs


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"unknown_key": 1}, "unknown_key"),
        ({"split": {"test_fraction": 1.5}}, "1.5"),
        ({"preprocess": {"shape": [32, 32]}}, "shape"),
        ({"data": {"source": "brats", "root": None}}, "root"),
        ({"seed": "abc"}, "abc"),
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
    "data": {"synthetic": {"n_subjects": 8, "shape": [32, 32, 32]}},
    "preprocess": {"shape": [16, 16, 16]},
}


@pytest.mark.slow
def test_synthetic_cohort_preprocessing_and_split_end_to_end(tmp_path):
    config = write_config(tmp_path / "c.yaml", **TINY)
    until = ("--until", "preprocess_subject", "split")
    snakemake(tmp_path, "--cores", "2", "--configfile", str(config), *until)
    results = tmp_path / "results"
    split = pd.read_csv(results / "split.csv")
    assert len(split) == 8 and set(split["split"]) == {"train", "val", "test"}
    assert len(list((results / "preprocessed").glob("*/image.npy"))) == 8
    raw = _checksums(results / "raw")
    assert len(raw) == 8 * 5
    # nothing left to do, and the raw tree is untouched by preprocessing
    again = snakemake(tmp_path, "-n", "--configfile", str(config), *until)
    assert planned_jobs(again) == {}
    assert _checksums(results / "raw") == raw
    # the same seed in another directory gives byte-identical raw data and split
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(config, other / "c.yaml")
    snakemake(other, "--cores", "2", "--configfile", str(other / "c.yaml"), *until)
    assert _checksums(other / "results" / "raw") == raw
    assert (other / "results" / "split.csv").read_bytes() == (results / "split.csv").read_bytes()

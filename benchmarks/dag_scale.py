"""Dry run of the paper config at BraTS 2017 scale: wall time, and sbatch submissions it plans.

Writes a fake BraTS 2017 tree of 285 tiny subjects (210 HGG, 75 LGG; 16³ synthetic volumes,
since a dry run reads only file names), then times `snakemake -n --profile slurm` on
config/brats2017.yaml from the repository root (target: under 3 s). Submissions: one per job,
except that the profile's `group-components` batches the preprocess group's jobs. A dry run
does not form groups, so that count is computed from the planned jobs and the profile's value.

Usage: python benchmarks/dag_scale.py [--subjects 285] [--repeats 3]
"""

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from segrobust.cohort import write_cohort

ROOT = Path(__file__).resolve().parents[1]
BRATS17_LGG_FRACTION = 75 / 285


def job_counts(dry_run_output: str) -> dict[str, int]:
    """Jobs per rule from the "Job stats" table of a dry run."""
    counts, table = {}, False
    for line in dry_run_output.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            table = True
        elif table and parts[:1] == ["total"]:
            break
        elif table and len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def timed_dry_run(data_root: Path, workdir: Path) -> tuple[float, str]:
    """Wall time and output of one dry run (a fresh Python process, as a user would run it)."""
    cmd = [
        sys.executable, "-m", "snakemake", "-n", "--profile", "slurm",
        "-d", str(workdir), "--configfile", "config/brats2017.yaml",
        "--config", f"data={{root: {data_root}}}",  # merged into the file's data section
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"dry run failed:\n{result.stdout}\n{result.stderr}")
    return seconds, result.stdout + result.stderr


def submissions(counts: dict[str, int], group_components: dict[str, int]) -> int:
    """sbatch calls for the planned jobs: `all` runs locally; preprocess jobs are batched."""
    batch = group_components.get("preprocess", 1)
    preprocess = counts.get("preprocess_subject", 0)
    others = sum(n for rule, n in counts.items() if rule not in ("all", "preprocess_subject"))
    return others + math.ceil(preprocess / batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=285)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    profile = yaml.safe_load((ROOT / "slurm" / "config.yaml").read_text())
    group_components = profile.get("group-components", {})
    with tempfile.TemporaryDirectory() as tmp:
        data_root = Path(tmp) / "Brats17"
        start = time.perf_counter()
        write_cohort(data_root, args.subjects, (16, 16, 16), (1.0, 1.0, 1.0),
                     BRATS17_LGG_FRACTION, seed=0, anatomy="phantom")  # fmt: skip
        print(f"fake tree: {args.subjects} subjects in {time.perf_counter() - start:.1f} s")
        runs = [timed_dry_run(data_root, Path(tmp) / "work") for _ in range(args.repeats)]
    seconds = [s for s, _ in runs]
    counts = job_counts(runs[0][1])
    print(f"dry run: min {min(seconds):.2f} s, max {max(seconds):.2f} s over {args.repeats} runs")
    print("planned jobs: " + ", ".join(f"{rule} {n}" for rule, n in counts.items()))
    print(f"jobs: {sum(counts.values())} (preprocess_subject {counts['preprocess_subject']})")
    print(f"sbatch submissions: {submissions(counts, group_components)} with group-components "
          f"{group_components}, {submissions(counts, {})} without")  # fmt: skip


if __name__ == "__main__":
    main()

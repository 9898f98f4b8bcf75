"""What each workflow script pays at start-up for its imports, before and after a change.

    python benchmarks/startup.py [--before-ref main] [--repeats 5] [--scripts attack figure ...]

Each job of the workflow is a fresh Python process that runs one ``workflow/scripts/*.py``; the
imports at the top of that script (and what they import in turn) are paid by every job. For each
script this runs its module-level import statements alone, in a fresh subprocess with
``python -X importtime``, once against the package tree of git ref ``--before-ref`` (exported with
``git archive``: its ``src/`` and its own scripts) and once against this working tree, alternating
the two ``--repeats`` times. Prints per script the median CPU seconds (user + system of the child)
of each side and the heavy packages each side imported, with their cumulative import time (wall
ms, from ``-X importtime``, of the median run). Run it on an idle machine, or read the ratios:
both sides run side by side, so a shared CPU slows both alike.
"""

import argparse
import ast
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import pandas as pd

from segrobust.models.device import cpu_model

ROOT = Path(__file__).resolve().parents[1]
HEAVY = (
    "torch", "monai", "scipy.stats", "scipy.ndimage", "scipy.spatial", "torchio", "matplotlib",
    "pandas", "nibabel", "skimage", "statsmodels", "ants", "markdown",
)  # fmt: skip


def import_lines(script: Path) -> str:
    """The module-level import statements of ``script``, as source."""
    tree = ast.parse(script.read_text())
    nodes = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    return "\n".join(ast.unparse(n) for n in nodes)


def export_tree(ref: str, target: Path) -> Path:
    """``src/`` and ``workflow/scripts/`` of git ``ref`` under ``target``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "src", "workflow/scripts"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def run_imports(code: str, src: Path) -> tuple[float, dict[str, float]]:
    """CPU seconds of a fresh ``python -X importtime -c code`` and its heavy packages' ms."""
    env = {**os.environ, "PYTHONPATH": str(src), "MPLBACKEND": "Agg"}
    child = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-c", code],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{code!r} failed with PYTHONPATH={src}:\n{stderr[-2000:]}")
    packages = {}
    for line in stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] in HEAVY and parts[2] not in packages:
            packages[parts[2]] = int(parts[1]) / 1000
    return usage.ru_utime + usage.ru_stime, packages


def measure(scripts: list[str], trees: dict[str, Path], repeats: int) -> pd.DataFrame:
    """One row per script: median CPU s per side and the heavy packages each side imports."""
    rows = []
    for name in scripts:
        codes = {side: import_lines(tree / "workflow" / "scripts" / f"{name}.py")
                 for side, tree in trees.items()}  # fmt: skip
        runs: dict[str, list] = {side: [] for side in trees}
        for _ in range(repeats):
            for side, tree in trees.items():  # alternating: a busy moment hits both sides
                runs[side].append(run_imports(codes[side], tree / "src"))
        row = {"script": name}
        for side, results in runs.items():
            cpu = [r[0] for r in results]
            median = statistics.median(cpu)
            packages = results[cpu.index(min(cpu, key=lambda c: abs(c - median)))][1]
            row[f"{side} CPU s"] = median
            row[f"{side} heavy imports (ms)"] = ", ".join(
                f"{p} {ms:.0f}" for p, ms in sorted(packages.items(), key=lambda kv: -kv[1])
            )
        rows.append(row)
    return pd.DataFrame(rows).set_index("script")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before-ref", default="main", help="git ref to compare against")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scripts", nargs="*", help="names in workflow/scripts (default: all)")
    args = parser.parse_args()
    scripts = args.scripts or sorted(p.stem for p in (ROOT / "workflow" / "scripts").glob("*.py"))
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": export_tree(args.before_ref, Path(tmp)), "after": ROOT}
        table = measure(scripts, trees, args.repeats)
        floor = statistics.median(run_imports("pass", ROOT / "src")[0] for _ in range(args.repeats))
    table["after/before"] = table["after CPU s"] / table["before CPU s"]
    print(f"CPU: {cpu_model()}; before = {args.before_ref}, after = working tree; median of "
          f"{args.repeats}; an empty interpreter costs {floor:.2f} CPU s")  # fmt: skip
    cpu = ["before CPU s", "after CPU s", "after/before"]
    print(table[cpu].round(2).to_markdown())
    print()
    print(table.drop(columns=cpu).to_markdown())


if __name__ == "__main__":
    main()

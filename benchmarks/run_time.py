"""Where a finished run's time went: Snakemake's benchmark files summed per rule family.

    python benchmarks/run_time.py [results]

Prints per rule: jobs, summed wall seconds ("s"), summed CPU seconds and the longest job. Wall
seconds of jobs that ran side by side add up to more than the run's wall time; on an otherwise
idle machine the CPU seconds are what the run costs.
"""

import sys
from pathlib import Path

import pandas as pd

from segrobust.models.device import cpu_model


def main() -> None:
    results = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
    rows = []
    for path in sorted((results / "benchmarks").rglob("*.tsv")):
        rule = path.relative_to(results / "benchmarks").parts[0].removesuffix(".tsv")
        last = pd.read_csv(path, sep="\t").iloc[-1]
        rows.append({"rule": rule, "s": last["s"], "cpu_s": last["cpu_time"]})
    if not rows:
        raise SystemExit(f"no benchmark files under {results / 'benchmarks'}")
    table = (
        pd.DataFrame(rows)
        .groupby("rule")
        .agg(
            jobs=("s", "size"), wall_s=("s", "sum"), cpu_s=("cpu_s", "sum"), longest_s=("s", "max")
        )
    )
    table = table.sort_values("cpu_s", ascending=False)
    table.loc["total"] = [table["jobs"].sum(), table["wall_s"].sum(), table["cpu_s"].sum(),
                          table["longest_s"].max()]  # fmt: skip
    print(f"CPU: {cpu_model()}")
    print(table.round(0).astype(int).to_markdown())


if __name__ == "__main__":
    main()

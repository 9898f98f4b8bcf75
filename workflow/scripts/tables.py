"""The paper's Tables 1 and 2 (CSV, Markdown, LaTeX) with their per-test statistics."""

import pandas as pd

from segrobust.logs import log_to_file
from segrobust.tables import table1, table2, write_table

log = log_to_file(snakemake.log[0])
results = pd.read_csv(snakemake.input[0], keep_default_na=False, na_values=[""])
stats = snakemake.params.statistics
common = {
    "n_boot": stats["n_boot"],
    "seed": snakemake.params.seed,
    "correction": stats["correction"],
    "alpha": stats["alpha"],
    "zero_method": stats["zero_method"],
}
out = snakemake.output
first = table1(results, rows=[tuple(row) for row in snakemake.params.table1_rows], **common)
write_table(first, csv=out.table1_csv, markdown=out.table1_md, latex=out.table1_tex,
            html=out.table1_html, tests_csv=out.table1_tests)  # fmt: skip
second = table2(results, eps=stats["table2_eps"], **common)
write_table(second, csv=out.table2_csv, markdown=out.table2_md, latex=out.table2_tex,
            html=out.table2_html, tests_csv=out.table2_tests)  # fmt: skip
log.info("Table 1:\n%s", first.display.to_string())
log.info("Table 2:\n%s", second.display.to_string())

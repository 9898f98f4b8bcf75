"""N4 + resize + standardise one subject into the memory-mappable training format."""

import os
from pathlib import Path

# ITK's N4 result depends on its thread count: pin it to the job's threads (before ANTsPy loads)
# so a SLURM job and a local run of the same config write the same arrays.
os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(snakemake.threads)

from segrobust.data import FILE_KINDS, Subject  # noqa: E402
from segrobust.logs import log_to_file  # noqa: E402
from segrobust.preprocessing import preprocess_subject  # noqa: E402

log = log_to_file(snakemake.log[0])
subject = Subject(
    id=snakemake.wildcards.subject,
    grade=snakemake.params.grade,
    files={kind: Path(snakemake.input[kind]) for kind in FILE_KINDS},
)
meta = preprocess_subject(
    subject,
    Path(snakemake.output.image).parent,
    shape=tuple(snakemake.params.shape),
    standardisation=snakemake.params.standardise,
    n4=snakemake.params.n4,
)
log.info("preprocessed %s: %s -> %s", subject.id, meta["raw_shape"], meta["shape"])

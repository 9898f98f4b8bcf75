"""N4 + resize + standardise one subject into the memory-mappable training format."""

from pathlib import Path

from segrobust.data import FILE_KINDS, Subject
from segrobust.logs import log_to_file
from segrobust.preprocessing import preprocess_subject

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

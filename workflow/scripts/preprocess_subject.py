"""Read (in full, checksummed) + N4 + resize + standardise one subject into the training format."""

from pathlib import Path

from segrobust.data import Subject
from segrobust.logs import log_to_file
from segrobust.preprocessing import preprocess_subject

log = log_to_file(snakemake.log[0])
subject = Subject.from_dict(snakemake.params.subject)
meta = preprocess_subject(
    subject,
    Path(snakemake.output.image).parent,
    shape=tuple(snakemake.params.shape),
    standardisation=snakemake.params.standardise,
    n4=snakemake.params.n4,
    checksums=snakemake.params.sha256,
)
log.info("preprocessed %s: %s -> %s", subject.id, meta["raw_shape"], meta["shape"])

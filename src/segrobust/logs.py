"""Logging set-up for workflow scripts: everything a job prints goes to its Snakemake log."""

import logging
import sys
from pathlib import Path


def log_to_file(path: str | Path) -> logging.Logger:
    """Send logging, stdout and stderr (warnings, tracebacks) of this process to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "a", buffering=1)  # noqa: SIM115 (lives as long as the process)
    sys.stdout = sys.stderr = stream
    logging.basicConfig(
        stream=stream,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        force=True,
    )
    logging.captureWarnings(True)
    return logging.getLogger("segrobust")

"""Logging set-up for workflow scripts: everything a job prints goes to its Snakemake log."""

import logging
import sys
import traceback
from pathlib import Path


def log_to_file(path: str | Path) -> logging.Logger:
    """Send logging, stdout and stderr (warnings, tracebacks) of this process to ``path``.

    An uncaught exception is also summarised in one line on the original stderr, so the
    reason a job failed shows on the console next to Snakemake's error, not only in the log.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "a", buffering=1)  # noqa: SIM115 (lives as long as the process)
    console = sys.stderr
    sys.stdout = sys.stderr = stream

    def report(kind: type[BaseException], error: BaseException, tb) -> None:
        traceback.print_exception(kind, error, tb, file=stream)
        print(f"{kind.__name__}: {error}\n(traceback in {path})", file=console, flush=True)

    sys.excepthook = report
    logging.basicConfig(
        stream=stream,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        force=True,
    )
    logging.captureWarnings(True)
    return logging.getLogger("segrobust")

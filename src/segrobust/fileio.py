"""Atomic file output: write to a temporary sibling, then rename into place; file checksums;
Markdown documents with their HTML rendering.

A job killed mid-write (SLURM time limit, pre-emption, Ctrl-C) never leaves a half-written
file under the final name, so Snakemake and resumed jobs only ever see complete outputs.
"""

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import markdown as md


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` if the block succeeds.

    The temporary name keeps the final suffixes (``.nii.gz``, ``.npy``) so writers that infer
    the format from the name behave the same. On error the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name.split('.')[0]}.", suffix=suffix
    )
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; rename it to ``path`` on success.

    An existing ``path`` is replaced. On error the temporary directory is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    tmp_path.chmod(0o777 & ~_umask())
    try:
        yield tmp_path
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp_path, path)
    except BaseException:
        shutil.rmtree(tmp_path, ignore_errors=True)
        raise


_HTML_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><style>
body {{ font-family: sans-serif; font-size: 14px; margin: 1em; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
th, td {{ border: 1px solid #bbb; padding: 2px 8px; text-align: left; }}
th {{ background: #eee; }}
</style></head><body>
{body}
</body></html>
"""


def write_document(
    text: str, markdown: str | os.PathLike | None, html: str | os.PathLike | None
) -> None:
    """Write Markdown ``text`` as it is and rendered to a standalone HTML page (tables
    included), both atomically: the HTML is what the Snakemake report shows inline."""
    if markdown is not None:
        with atomic_path(markdown) as tmp:
            tmp.write_text(text, encoding="utf-8")
    if html is not None:
        with atomic_path(html) as tmp:
            body = md.markdown(text, extensions=["tables"])
            tmp.write_text(_HTML_PAGE.format(body=body), encoding="utf-8")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()

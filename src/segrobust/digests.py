"""Code digests of workflow jobs, derived from what their scripts import.

Snakemake re-runs a job when its script changes but knows nothing of the library behind it.
Each rule passes ``code=code_digest(<its script>)`` as a param: a digest of every module of
this package the script imports, transitively, found by reading the import statements
(:mod:`ast`, including imports inside functions, which run when the function is called).
Changing a module then re-runs exactly the jobs whose scripts reach it, and nothing is kept
in step by hand.
"""

import ast
import hashlib
import os
from pathlib import Path

PACKAGE = "segrobust"
ROOT = Path(__file__).resolve().parent


def _module_file(name: str) -> Path | None:
    """The file of module ``segrobust.<name>`` (the package itself for "", a subpackage's
    ``__init__.py``), if any."""
    base = ROOT.joinpath(*name.split(".")) if name else ROOT
    for path in (base.with_suffix(".py") if name else None, base / "__init__.py"):
        if path is not None and path.is_file():
            return path
    return None


def direct_imports(path: str | os.PathLike) -> set[str]:
    """Modules of this package that the Python file ``path`` imports anywhere in it, named
    relative to the package ("" for the package itself, "a.b" for ``segrobust.a.b``):
    ``import segrobust.x``, ``from segrobust import x`` (x a module) and ``from segrobust.x
    import y``."""
    tree = ast.parse(Path(path).read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name != PACKAGE and not name.startswith(f"{PACKAGE}."):
                continue
            parts = name.split(".")[1:]
            for depth in range(len(parts) + 1):  # a dotted import runs every parent package
                module = ".".join(parts[:depth])
                if _module_file(module) is not None:
                    found.add(module)
    return found


def imported_modules(path: str | os.PathLike) -> set[str]:
    """Every module of this package that ``path`` reaches through imports (transitive)."""
    seen: set[str] = set()
    todo = list(direct_imports(path))
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo += direct_imports(_module_file(module)) - seen
    return seen


def code_digest(script: str | os.PathLike) -> str:
    """Digest (16 hex digits) of the package modules ``script`` imports, transitively."""
    digest = hashlib.sha256()
    for module in sorted(imported_modules(script)):
        digest.update(f"{module}\0".encode())
        digest.update(_module_file(module).read_bytes())
    return digest.hexdigest()[:16]

"""Code digests follow the imports of each workflow script."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from segrobust import digests
from segrobust.digests import code_digest, direct_imports, imported_modules

SCRIPTS = sorted((ROOT / "workflow" / "scripts").glob("*.py"))


def _users(module: str) -> set[str]:
    return {s.stem for s in SCRIPTS if module in imported_modules(s)}


def test_every_import_form_is_found(tmp_path):
    script = tmp_path / "s.py"
    script.write_text(
        "import os\nimport segrobust.metrics\nfrom segrobust import plots, ATTACKS\n"
        "from segrobust.losses import segmentation_loss\n"
        "def f():\n    from segrobust.surface import voxel_spacing  # lazy: runs when called\n"
        "from segrobust.models import registry\nfrom segrobust.models.device import autocast\n"
    )
    assert direct_imports(script) == {"", "metrics", "plots", "losses", "surface", "models",
                                      "models.registry", "models.device"}  # fmt: skip


def test_imports_are_followed_transitively():
    # kernels decides every float32 CPU convolution; scripts reach it through the registry
    assert _users("models.kernels") >= {"train_model", "evaluate_clean", "attack",
                                        "audit_gradients"}  # fmt: skip
    assert _users("plots") == {"figure", "worst_case_figure"}
    assert _users("montages") == {"figure"}
    assert "metrics" in imported_modules(ROOT / "workflow" / "scripts" / "figure.py")
    assert not _users("digests") and not _users("cluster")  # the Snakefile's own helpers


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_digest_covers_every_module_the_script_loads(script):
    """Independent check: the package modules Python actually loads when the script's
    segrobust imports run (sys.modules) are all in the digest's set."""
    lines = [line for line in script.read_text().splitlines()
             if line.startswith(("from segrobust", "import segrobust"))]  # fmt: skip
    loaded_now = "print(' '.join(m for m in sys.modules if m.startswith('segrobust')))"
    probe = "\n".join([*lines, "import sys", loaded_now])
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = {m.removeprefix("segrobust").removeprefix(".") for m in out.stdout.split()}
    assert loaded <= imported_modules(script)


def test_changing_an_imported_module_changes_the_digest_and_nothing_else(tmp_path, monkeypatch):
    package = tmp_path / "segrobust"
    shutil.copytree(Path(digests.__file__).parent, package)
    monkeypatch.setattr(digests, "ROOT", package)
    attack, tables = ROOT / "workflow/scripts/attack.py", ROOT / "workflow/scripts/tables.py"
    before = code_digest(attack), code_digest(tables)
    with (package / "models" / "kernels.py").open("a") as stream:
        stream.write("# a comment changes the digest too\n")
    assert code_digest(attack) != before[0]
    assert code_digest(tables) == before[1]


def test_the_package_has_no_import_circle():
    """Every import of a segrobust module, also one inside a function, is an edge: the graph
    of the package's modules has no cycle (depth-first search, a module met again while still
    on the path closes one)."""
    package = Path(digests.__file__).parent
    modules = {".".join(p.relative_to(package).with_suffix("").parts).removesuffix("__init__")
               .rstrip("."): p for p in package.rglob("*.py")}  # fmt: skip
    edges = {m: direct_imports(p) - {m} for m, p in modules.items()}
    assert {"models.registry", "models.unet", "models.checkpoints"} <= edges.keys()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for other in sorted(edges[module]):
            assert state.get(other) != "open", f"import circle: {' -> '.join([*path, other])}"
            if other not in state:
                visit(other, [*path, other])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])

import os

import pytest

from segrobust.fileio import atomic_dir, atomic_path


def test_atomic_path_renames_on_success_with_usual_permissions(tmp_path):
    target = tmp_path / "sub" / "table.csv.gz"
    with atomic_path(target) as tmp:
        assert tmp.name.endswith(".csv.gz") and tmp.parent == target.parent
        tmp.write_text("x")
        assert not target.exists()
    assert target.read_text() == "x"
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    assert list(target.parent.iterdir()) == [target]


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.npy"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_dir_replaces_and_cleans_up(tmp_path):
    target = tmp_path / "subject"
    target.mkdir()
    (target / "stale").write_text("s")
    with atomic_dir(target) as tmp:
        (tmp / "image.npy").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["image.npy"]
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "other") as tmp:
        (tmp / "half").write_text("h")
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["subject"]

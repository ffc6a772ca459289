"""atomic_path: a result is either fully written or not there at all, and errors name it."""

from __future__ import annotations

import pytest

from navcuda.io.atomic import atomic_path


def test_writes_and_leaves_no_temporary(tmp_path):
    with atomic_path(tmp_path / "sub" / "out.txt") as tmp:
        assert tmp.parent == tmp_path / "sub" and tmp.name.startswith(".out.txt.")
        tmp.write_text("done")
    assert (tmp_path / "sub" / "out.txt").read_text() == "done"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["out.txt"]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_keeps_the_old_file(tmp_path, exc):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(type(exc)), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise exc
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_errors_name_the_target_not_the_temporary(tmp_path):
    (tmp_path / "adir").mkdir()
    with pytest.raises(IsADirectoryError, match=r"cannot write .*adir: it is a folder"):
        with atomic_path(tmp_path / "adir") as tmp:
            tmp.write_text("x")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OSError, match=r"cannot write .*afile/x\.nav: .*afile is a file, not a"):
        with atomic_path(tmp_path / "afile" / "x.nav") as tmp:
            tmp.write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"]
    assert list((tmp_path / "adir").iterdir()) == []

"""atomic_path: a result is either fully written or not there at all, and errors name it."""

from __future__ import annotations

import errno
import os
import stat
import time

import pytest
import torch

from navcuda.io import atomic
from navcuda.io.atomic import STALE_AFTER_S, atomic_path, atomic_save_safetensors

try:
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


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


def test_a_read_only_target_is_refused_not_replaced(tmp_path):
    target = tmp_path / "kept.nav"
    target.write_text("precious")
    target.chmod(0o444)
    with pytest.raises(
        PermissionError,
        match=r"cannot write .*kept\.nav: the file exists and is read-only \(mode 0o444\), and "
        r"navcuda does not replace a read-only file; make it writable \(chmod u\+w .*\) or write",
    ):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
    assert target.read_text() == "precious" and stat.S_IMODE(target.stat().st_mode) == 0o444
    assert [p.name for p in tmp_path.iterdir()] == ["kept.nav"]
    target.chmod(0o644)  # writable again: replaced as usual
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def _aged(path, text="half"):
    path.write_text(text)
    old = time.time() - STALE_AFTER_S - 60
    os.utime(path, (old, old))
    return path


@pytest.mark.skipif(fcntl is None, reason="needs POSIX file locks")
def test_leftovers_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    """A writer killed before its rename leaves ``.<name>.<8 chars>.tmp``; the next write to the
    folder removes such files once unchanged for a while and locked by no live writer."""
    leftover = _aged(tmp_path / ".dirs.nav.k3x_9q2a.tmp")
    fresh = (tmp_path / ".dirs.nav.ab12cd34.tmp").resolve()  # a writer may be just starting
    fresh.write_text("now")
    live = _aged(tmp_path / ".big.pt.zz99yy88.tmp")  # a slow live writer holds its lock
    others = [_aged(tmp_path / n) for n in (".notes.tmp", ".x.nav.SHORT.tmp", "y.abcdefgh.tmp")]
    with open(live, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("done")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["out.txt", fresh.name, live.name, *(p.name for p in others)])
    assert not leftover.exists()


@pytest.mark.skipif(fcntl is None, reason="needs POSIX file locks")
def test_a_concurrent_writers_temporary_file_is_left_alone(tmp_path, monkeypatch):
    """Another writer's temporary file survives a sweep, however old, while it is being written."""
    monkeypatch.setattr(atomic, "STALE_AFTER_S", 0.0)  # everything counts as old
    with atomic_path(tmp_path / "slow.pt") as slow:
        slow.write_text("first half")
        atomic._SWEPT.clear()
        with atomic_path(tmp_path / "quick.txt") as tmp:
            tmp.write_text("x")
        assert slow.exists()
        slow.write_text("all of it")
    assert (tmp_path / "slow.pt").read_text() == "all of it"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quick.txt", "slow.pt"]


def test_full_disk_names_the_target_and_what_to_do(tmp_path, monkeypatch):
    def full(path, data):
        path.write_bytes(data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "_write_file", full)
    with pytest.raises(
        OSError,
        match=r"cannot write .*t\.safetensors: No space left on device: the disk \(or your quota\) "
        "is full; free some space or write elsewhere",
    ) as info:
        atomic_save_safetensors({"a": torch.ones(4)}, tmp_path / "t.safetensors")
    assert info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []

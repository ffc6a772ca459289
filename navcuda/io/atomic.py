"""Atomic file writes: nothing half-written is ever left where a result is expected.

Every writer in navcuda goes through :func:`atomic_path`: the data is written to a temporary file
in the target's folder (``.<name>.<8 random characters>.tmp``), then renamed over the target (an
atomic operation on POSIX file systems); if anything fails, or the process is interrupted, the
temporary file is removed and the target is untouched.

A process killed outright (SIGKILL, a power cut) cannot remove its temporary file. Each writer
holds an advisory lock (``flock``) on its temporary file while it exists, so the next write to the
same folder removes such leftovers: files of this name pattern older than
:data:`STALE_AFTER_S` that no process holds locked (concurrent writers, in this process or another,
are left alone). A read-only target is refused rather than silently replaced by a writable file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locks, so no sweeping of leftovers
    fcntl = None  # type: ignore[assignment]

__all__ = ["STALE_AFTER_S", "atomic_path", "atomic_save_safetensors", "nearest_existing"]

#: Age (seconds since the last change) after which an unlocked temporary file is a leftover.
STALE_AFTER_S = 120.0
# mkstemp's names: prefix, 8 characters of tempfile's alphabet, suffix.
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
# folder -> time of its last sweep by this process (one sweep per folder and STALE_AFTER_S).
_SWEPT: dict[str, float] = {}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    Parent folders are created. The file gets the usual permissions (``0o666`` minus the umask)
    rather than the private mode of temporary files. An existing read-only ``path`` is refused
    (``PermissionError``) before anything is written; leftover temporary files of killed writers
    in the folder are removed (see the module's documentation).
    """
    target = Path(path)
    _refuse_read_only(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _cannot_write(target, exc) from exc
    tmp_path = Path(tmp)
    if fcntl is None:  # no locks (and an open file could not be renamed on Windows)
        os.close(fd)
        fd = -1
    try:
        if fd >= 0:
            fcntl.flock(fd, fcntl.LOCK_EX)  # ours while it exists: no sweep may remove it
        _sweep_leftovers(target.parent, tmp_path)
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        if exc.filename not in (None, str(tmp_path), tmp):  # another file's error: as it is
            raise
        raise _cannot_write(target, exc) from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    finally:
        if fd >= 0:
            os.close(fd)


def atomic_save_safetensors(
    tensors: Mapping[str, object], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> Path:
    """Write ``tensors`` as a safetensors file at ``path`` through :func:`atomic_path`.

    The file is serialised in memory and written by navcuda itself, so a write failure (a full
    disk) is the ``OSError`` of :func:`atomic_path` naming ``path`` (safetensors' ``save_file``
    would raise its own ``SafetensorError``, and leave its own temporary files).
    """
    from safetensors.torch import save

    data = save(dict(tensors), metadata=metadata)
    with atomic_path(path) as tmp:
        _write_file(tmp, data)
    return Path(path)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _refuse_read_only(target: Path) -> None:
    """``PermissionError`` when ``target`` is an existing file nobody (or not we) may write."""
    try:
        st = os.stat(target)
    except OSError:
        return
    if stat.S_ISREG(st.st_mode) and (st.st_mode & 0o222 == 0 or not os.access(target, os.W_OK)):
        raise PermissionError(
            errno.EACCES,
            f"cannot write {target}: the file exists and is read-only (mode "
            f"{stat.S_IMODE(st.st_mode):#o}), and navcuda does not replace a read-only file; "
            f"make it writable (chmod u+w {target}) or write to another path",
        )


def _sweep_leftovers(folder: Path, own: Path) -> None:
    """Remove the temporary files of killed writers from ``folder`` (best effort, never raises):
    names of :func:`atomic_path`'s pattern, unchanged for :data:`STALE_AFTER_S`, not locked."""
    if fcntl is None:
        return
    key = os.path.abspath(folder)
    now = time.time()
    if now - _SWEPT.get(key, -STALE_AFTER_S) < STALE_AFTER_S:
        return
    _SWEPT[key] = now
    try:
        with os.scandir(folder) as it:
            names = [e.name for e in it if _TEMP_NAME.match(e.name) and e.name != own.name]
    except OSError:
        return
    for name in names:
        with contextlib.suppress(OSError):
            _remove_if_leftover(os.path.join(folder, name), now)


def _remove_if_leftover(path: str, now: float) -> None:
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < STALE_AFTER_S:
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: a live writer's
        if os.fstat(fd).st_ino == os.lstat(path).st_ino:  # still the file that was checked
            os.unlink(path)
    finally:
        os.close(fd)


def _cannot_write(target: Path, exc: OSError) -> OSError:
    """The error of writing ``target`` (through its hidden temporary file), naming ``target``."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        reason = f"{reason}: the disk (or your quota) is full; free some space or write elsewhere"
    if isinstance(exc, IsADirectoryError) or target.is_dir():
        reason = "it is a folder; give a file name"
    folder = nearest_existing(target.parent)
    if folder.exists() and not folder.is_dir():
        reason = f"{folder} is a file, not a folder"
    return type(exc)(exc.errno, f"cannot write {target}: {reason}")


def nearest_existing(path: str | os.PathLike) -> Path:
    """``path`` or its nearest ancestor that exists (where missing folders would be created)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return p

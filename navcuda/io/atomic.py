"""Atomic file writes: nothing half-written is ever left where a result is expected.

Every writer in navcuda goes through :func:`atomic_path`: the data is written to a temporary file
in the target's folder, then renamed over the target (an atomic operation on POSIX file systems);
if anything fails, or the process is interrupted, the temporary file is removed and the target is
untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "nearest_existing"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    Parent folders are created. The file gets the usual permissions (``0o666`` minus the umask)
    rather than the private mode of temporary files.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise _cannot_write(target, exc) from exc
    tmp_path = Path(tmp)
    try:
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


def _cannot_write(target: Path, exc: OSError) -> OSError:
    """The error of writing ``target`` (through its hidden temporary file), naming ``target``."""
    reason = exc.strerror or str(exc)
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

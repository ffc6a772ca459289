"""The C++/CUDA sources follow the repository's .clang-format (ruff covers Python in .ci/run)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_csrc_is_clang_formatted():
    exe = shutil.which("clang-format")
    if exe is None:
        pytest.skip("clang-format not installed (pip install '.[test]' provides it)")
    files = sorted(
        str(p)
        for ext in ("*.h", "*.cpp", "*.cu", "*.cuh", "*.inc")
        for p in (ROOT / "csrc").rglob(ext)
    )
    assert files, "no C++/CUDA sources found"
    proc = subprocess.run([exe, "--dry-run", "--Werror", *files], capture_output=True, text=True)
    assert proc.returncode == 0, "run `clang-format -i` on:\n" + "\n".join(
        sorted({line.split(":")[0] for line in proc.stderr.splitlines() if ": error:" in line})
    )

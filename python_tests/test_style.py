"""The C++/CUDA sources follow the repository's .clang-format (ruff covers Python in .ci/run),
and keep to the rules that the build machines taught us."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_csrc_is_clang_formatted():
    exe = shutil.which("clang-format")
    if exe is None:
        pytest.skip("clang-format not installed (pip install '.[test]' provides it)")
    files = [str(p) for p in _csrc_files()]
    assert files, "no C++/CUDA sources found"
    proc = subprocess.run([exe, "--dry-run", "--Werror", *files], capture_output=True, text=True)
    assert proc.returncode == 0, "run `clang-format -i` on:\n" + "\n".join(
        sorted({line.split(":")[0] for line in proc.stderr.splitlines() if ": error:" in line})
    )


def _csrc_files():
    return sorted(
        p for ext in ("*.h", "*.cpp", "*.cu", "*.cuh", "*.inc") for p in (ROOT / "csrc").rglob(ext)
    )


def test_csrc_uses_no_iostreams():
    """Messages are built with navcuda::Msg (csrc/common.h), never with iostreams: on an H200
    lease's image the emulator module's std::ostringstream called a codecvt facet in place of
    num_put (a private libstdc++ copy beside the process's) and crashed the test run."""
    banned = re.compile(r"#include\s*<(sstream|iostream|ostream|istream|fstream)>|std::\w*stream\b")
    hits = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in _csrc_files()
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if banned.search(line.split("//")[0])
    ]
    assert not hits, "use navcuda::Msg / NAVCUDA_MSG instead of iostreams:\n" + "\n".join(hits)

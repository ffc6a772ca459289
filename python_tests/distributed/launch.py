"""Launching ``python -m navcuda`` on several local processes as ``torchrun`` would (the
``env://`` variables, one thread each, gloo), for the distributed tests and benchmark."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Rank:
    proc: subprocess.Popen
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def rank_env(rank: int, world: int, port: int | str, extra: dict[str, str] | None = None):
    """The environment ``torchrun`` gives rank ``rank`` of ``world`` (one thread; this folder on
    the path, for the test models)."""
    return {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            **(extra or {})}  # fmt: skip


def start(args: list[str], world: int, logs: Path, extra_env: dict[str, str] | None = None):
    """``python -m navcuda *args`` as ranks ``0..world-1``; stdout+stderr of rank r go to
    ``logs/rank{r}.log``."""
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    ranks = []
    for r in range(world):
        env = rank_env(r, world, port, extra_env)
        log = logs / f"rank{r}.log"
        with open(log, "w") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "navcuda", *args], env=env,
                                    stdout=fh, stderr=subprocess.STDOUT)  # fmt: skip
        ranks.append(Rank(proc, log))
    return ranks


def wait(ranks: list[Rank], timeout: float) -> list[int]:
    """Every rank's exit code; kills them all and fails after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    codes = []
    for rk in ranks:
        try:
            codes.append(rk.proc.wait(timeout=max(0.1, end - time.monotonic())))
        except subprocess.TimeoutExpired:
            for other in ranks:
                other.proc.kill()
            logs = "\n".join(f"--- rank {i}\n{o.text()[-2000:]}" for i, o in enumerate(ranks))
            raise AssertionError(f"ranks still running after {timeout} s\n{logs}") from None
    return codes


def run(args: list[str], world: int, logs: Path, timeout: float = 120, **kw) -> list[int]:
    return wait(start(args, world, logs, **kw), timeout)

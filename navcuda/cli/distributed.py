"""``torchrun --nproc-per-node N -m navcuda discover ...``: a command on several processes.

The commands that do: ``discover`` (every method), and ``evaluate`` with the experiments of
:data:`navcuda.cli.evaluate.DISTRIBUTED_EXPERIMENTS` (``locality``, ``reproduce``, ``realism``:
their directions split across the ranks, rank 0 writes the JSON and the figure).

The CLI sees the launcher's environment (:func:`navcuda.distributed.launch_env`) and runs the
command here instead of directly: it starts the process group (gloo on the CPU, NCCL with
``--device cuda``, each rank then on ``cuda:LOCAL_RANK``), keeps standard output, warnings and
progress bars to rank 0 (errors are printed by every rank), and ends the group.

A failing rank must not leave the others waiting: a rank whose command fails posts its error
line to the group's store and destroys its process group, so that its peers' next collective
fails at once (a rank that dies without a word is noticed the same way, or after the timeout,
``NAVCUDA_DIST_TIMEOUT``); those peers then print the failed rank's error as theirs, and every
rank exits with a non-zero code.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import NoReturn

import torch

from navcuda import distributed as dist
from navcuda.cli.evaluate import DISTRIBUTED_EXPERIMENTS

__all__ = ["DISTRIBUTED_COMMANDS", "distributed_refusal", "run_distributed"]

#: The commands that run on several processes (the others say so and stop); ``evaluate`` only
#: with the experiments of :data:`~navcuda.cli.evaluate.DISTRIBUTED_EXPERIMENTS`.
DISTRIBUTED_COMMANDS = ("discover", "evaluate")

_ERROR_KEY = "navcuda/failed"

#: ``run(args, report)`` runs a command and returns its exit code; ``report`` gets its error line.
Runner = Callable[[argparse.Namespace, Callable[[str], None]], int]


def run_distributed(args: argparse.Namespace, run: Runner, env: dist.LaunchEnv) -> int:
    """Run ``args``' command as rank ``env.rank`` of ``env.world_size``; the exit code."""
    prog = f"navcuda {args.command}"
    refusal = distributed_refusal(args)
    if refusal is not None:
        print(
            f"{prog}: error: launched on {env.world_size} processes (RANK/WORLD_SIZE are set), "
            f"but {refusal}",
            file=sys.stderr,
        )
        return 2
    device = getattr(args, "device", None) or "cpu"
    if torch.device(device).type == "cuda" and torch.device(device).index is None:
        device = args.device = f"cuda:{env.local_rank}"
    try:
        dist.init(env, device)
    except Exception as exc:  # noqa: BLE001 -- any failure to join is reported the same way
        print(f"{prog}: error: rank {env.rank} could not join the process group: {exc}",
              file=sys.stderr)  # fmt: skip
        return 1
    own: list[str] = []
    try:
        with _quiet_unless_rank0(env.rank):
            code = run(args, own.append)
    except KeyboardInterrupt:
        code = 130
        own.append("interrupted")
    except Exception as exc:  # noqa: BLE001 -- a peer's failure, or one of ours
        peer = None if _is_own(exc) else _peer_error()
        if peer is not None:
            print(f"{prog}: error: {peer} (seen by rank {env.rank})", file=sys.stderr)
        else:
            line = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
            if not _is_own(exc):
                line = f"a peer process failed or left ({line})"
            print(f"{prog}: error: rank {env.rank}: {line}", file=sys.stderr)
            if _is_own(exc):
                own.append(line)
        code = 1
    if code != 0 and own:
        _post_error(env.rank, own[-1])
    dist.shutdown(wait_for_peers=code == 0)
    if code != 0:
        _leave(code)
    return code


def _leave(code: int) -> NoReturn:
    """End a failed rank at once, its streams flushed, without the interpreter's teardown: there
    the C++ threads of the torn-down group could abort the process ("terminate called without an
    active exception", exit -6 instead of the error's code; ~1 in 15 failed runs of two gloo
    ranks here, and twice running in the clean-clone CI). Its files are written atomically, so
    nothing is left half-written."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def distributed_refusal(args: argparse.Namespace) -> str | None:
    """Why ``args``' command cannot run on several processes (None when it can)."""
    experiment = getattr(args, "experiment", None)
    if args.command == "evaluate" and experiment not in DISTRIBUTED_EXPERIMENTS:
        return (
            f"evaluate {experiment} runs in one process (on several: "
            f"{', '.join(DISTRIBUTED_EXPERIMENTS)}); run it without torchrun"
        )
    if args.command not in DISTRIBUTED_COMMANDS:
        return (
            f"only {', '.join(DISTRIBUTED_COMMANDS[:-1])} and evaluate "
            f"{'/'.join(DISTRIBUTED_EXPERIMENTS)} run on several; run it in one process"
        )
    return None


@contextlib.contextmanager
def _quiet_unless_rank0(rank: int):
    """Ranks other than 0: no standard output, warnings or progress bars (tqdm writes to
    stderr, which stays for errors; the methods also switch their bars off off rank 0)."""
    if rank == 0:
        yield
        return
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield


def _is_own(exc: BaseException) -> bool:
    """False for the errors of a broken process group (a peer failed, left or timed out)."""
    if isinstance(exc, dist.DistributedError | torch.distributed.DistError):
        return False
    text = str(exc)
    markers = ("Connection closed by peer", "Connection reset", "Timed out", "gloo", "NCCL")
    return not (isinstance(exc, RuntimeError) and any(m in text for m in markers))


def _store():
    try:
        return torch.distributed.distributed_c10d._get_default_store()
    except Exception:  # noqa: BLE001 -- no store: no message
        return None


def _post_error(rank: int, line: str) -> None:
    store = _store()
    if store is None:
        return
    with contextlib.suppress(Exception):
        store.set(_ERROR_KEY, f"rank {rank} failed: {line}")


def _peer_error() -> str | None:
    """The error line a failed peer posted, if it could (and the store is still reachable)."""
    store = _store()
    if store is None:
        return None
    for _ in range(10):  # the peer posts before it leaves; give a slow one a second
        try:
            if store.check([_ERROR_KEY]):
                return store.get(_ERROR_KEY).decode(errors="replace")
        except Exception:  # noqa: BLE001 -- the store died with rank 0
            return None
        time.sleep(0.1)
    return None

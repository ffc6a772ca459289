"""Discovery on several processes with ``torch.distributed``: the launch environment, the process
group, rank-0 helpers, and the sharded Hessian-vector products of the spectrum method.

Nothing here is active in one process: every helper falls back to the plain computation when no
process group is initialised (or it has one rank), so the methods call them unconditionally.

- **Launch**: :func:`launch_env` reads what ``torchrun`` (or any launcher of the ``env://``
  convention) sets -- ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
  ``MASTER_PORT``; :func:`init` starts the group (NCCL for CUDA devices, gloo for the CPU) with a
  timeout (``NAVCUDA_DIST_TIMEOUT`` seconds, default 600) after which a collective that a peer
  never joins raises instead of hanging; :func:`shutdown` ends it.
- **Rank 0**: :func:`from_rank0` runs a function on rank 0 only (reading a checkpoint that only
  rank 0 wrote, checking the output path) and gives every rank its result -- or its exception,
  raised on every rank alike. :func:`gather_rows` concatenates per-rank results in rank order.
- **Sharding**: :func:`shard` splits ``n`` items into ``world_size`` contiguous, balanced slices;
  :func:`sharded_map` runs a function over a rank's share of independent items (the evaluation
  experiments' directions) and hands rank 0 all results, in order.
- **Spectrum**: :class:`ShardedProducts` turns a rank's Hessian-vector product over its share
  of the latents into the product over all of them (one all-reduce per block, weighted by the
  share's size, so it equals the single-process mean), and :func:`solve_sharded` runs an
  eigensolver over it, either identically on every rank (``"replicated"``, the default: no
  broadcast, with a check that the ranks' blocks stay bitwise identical) or on rank 0 only with
  the blocks broadcast to the others (``"rank0"``); ``NAVCUDA_DIST_SOLVER`` picks one
  (``benchmarks/test_bench_distributed.py`` measures both).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "SOLVER_PLACEMENTS",
    "DistributedError",
    "LaunchEnv",
    "ShardedProducts",
    "from_rank0",
    "gather_rows",
    "init",
    "is_active",
    "is_rank0",
    "launch_env",
    "rank",
    "shard",
    "shard_inputs",
    "sharded_directions",
    "sharded_map",
    "shutdown",
    "solve_sharded",
    "solver_placement",
    "timeout_s",
    "world_size",
]

T = TypeVar("T")
R = TypeVar("R")

#: Seconds a collective waits for its peers before it raises (``NAVCUDA_DIST_TIMEOUT``).
DEFAULT_TIMEOUT_S = 600.0
#: Where the spectrum's eigensolver runs (``NAVCUDA_DIST_SOLVER``): see the module docstring.
SOLVER_PLACEMENTS = ("replicated", "rank0")


class DistributedError(RuntimeError):
    """A distributed run cannot go on: a bad launch environment, a peer that failed or left, or
    ranks whose replicated state diverged."""


@dataclass(frozen=True)
class LaunchEnv:
    """What the launcher told this process (``torchrun`` sets all of it)."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


def launch_env(environ: Mapping[str, str] | None = None) -> LaunchEnv | None:
    """The launch environment, or None when ``RANK`` and ``WORLD_SIZE`` are both unset (a plain
    process). Raises :class:`DistributedError` for a partial or inconsistent one."""
    env = os.environ if environ is None else environ
    if "RANK" not in env and "WORLD_SIZE" not in env:
        return None
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in env]
    if missing:
        raise DistributedError(
            f"distributed launch environment incomplete: {', '.join(missing)} unset (launch with "
            "torchrun --nproc-per-node N -m navcuda ..., which sets RANK, WORLD_SIZE, "
            "MASTER_ADDR and MASTER_PORT; unset RANK and WORLD_SIZE to run in one process)"
        )
    try:
        rank_, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank_))
        port = int(env["MASTER_PORT"])
    except ValueError as exc:
        raise DistributedError(f"distributed launch environment: not an integer ({exc})") from None
    if not (world >= 1 and 0 <= rank_ < world and local >= 0 and 0 < port < 65536):
        raise DistributedError(
            f"distributed launch environment inconsistent: RANK={rank_}, WORLD_SIZE={world}, "
            f"LOCAL_RANK={local}, MASTER_PORT={port}"
        )
    return LaunchEnv(rank_, world, local, env["MASTER_ADDR"], port)


def timeout_s(environ: Mapping[str, str] | None = None) -> float:
    """``NAVCUDA_DIST_TIMEOUT`` (seconds, > 0), default :data:`DEFAULT_TIMEOUT_S`."""
    text = (os.environ if environ is None else environ).get("NAVCUDA_DIST_TIMEOUT")
    if text is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise DistributedError(
            f"NAVCUDA_DIST_TIMEOUT must be a positive number of seconds, got {text!r}"
        )
    return value


def init(env: LaunchEnv, device: torch.device | str = "cpu", timeout: float | None = None) -> str:
    """Start the default process group for ``env``: NCCL when ``device`` is a CUDA device (set as
    this process's current device), gloo otherwise; collectives raise after ``timeout`` seconds
    (default :func:`timeout_s`). Returns the backend."""
    dev = torch.device(device)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    seconds = timeout_s() if timeout is None else float(timeout)
    dist.init_process_group(
        backend,
        init_method="env://",  # torchrun's agent store, or a new one on rank 0
        rank=env.rank,
        world_size=env.world_size,
        timeout=timedelta(seconds=seconds),
    )
    return backend


def shutdown(wait_for_peers: bool = False) -> None:
    """Destroy the default process group if there is one (peers blocked in a collective with this
    rank then fail instead of waiting for the timeout).

    ``wait_for_peers`` (after a successful run): first wait at a barrier for every rank, so that
    rank 0, which hosts the store that the others' teardown still talks to, leaves last (a peer
    whose store vanishes mid-teardown can abort at exit). A peer that failed breaks the barrier
    at once (its group is gone) and reports its own error, so the barrier's is dropped.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if wait_for_peers and dist.get_world_size() > 1:
        with contextlib.suppress(Exception):
            dist.barrier()
    dist.destroy_process_group()


def is_active() -> bool:
    """True when a process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of ranks (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_rank0() -> bool:
    """True on rank 0, and in a plain process (which writes files and shows progress)."""
    return rank() == 0


def shard(n: int, rank_: int | None = None, world: int | None = None) -> slice:
    """Rank ``rank_``'s contiguous share of ``n`` items (sizes differ by at most one; default:
    this process's rank and world size)."""
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    return slice(n * r // w, n * (r + 1) // w)


def shard_inputs(inputs: Any) -> Any:
    """This rank's contiguous share of a batch (navcuda ``Inputs``, or anything with ``len`` and
    ``take(slice)``); all of it in one process. Every rank needs at least one item."""
    if not is_active():
        return inputs
    if len(inputs) < world_size():
        raise ValueError(
            f"{len(inputs)} latents cannot be shared by {world_size()} processes: give every "
            "process at least one (raise n_latents or use fewer processes)"
        )
    return inputs.take(shard(len(inputs)))


def sharded_directions(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Decorates ``fn(generator, directions, ...) -> [K, ...]`` whose rows are computed for each
    direction independently (amplitude calibration): on several processes each rank runs ``fn``
    on its share of the directions (without a progress bar except on rank 0) and every rank gets
    all rows, in order. In one process: ``fn`` itself."""

    @functools.wraps(fn)
    def wrapper(generator: Any, directions: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        directions = list(directions)
        if not is_active() or not directions:
            return fn(generator, directions, *args, **kwargs)
        if not is_rank0():
            kwargs["progress"] = False
        share = directions[shard(len(directions))]
        rows = fn(generator, share, *args, **kwargs) if share else None
        parts: list[Any] = [None] * world_size()
        dist.all_gather_object(parts, None if rows is None else rows.detach().cpu())
        return torch.cat([p for p in parts if p is not None])

    return wrapper


def sharded_map(fn: Callable[[list[T]], Sequence[R]], items: Sequence[T]) -> list[R] | None:
    """``fn(items)`` computed in shares: ``fn`` maps a list of independent items to one result
    per item; on several processes each rank calls it on its contiguous share (not at all on an
    empty one) and rank 0 gets every result in the order of ``items``, the other ranks None.
    An exception ``fn`` raises on any rank is raised on every rank (the first rank's, once all
    have finished their shares), so that they fail alike. In one process: ``list(fn(items))``.

    The results travel pickled to rank 0 only (a gather, not an all-gather: a locality
    experiment's heat-maps are ``H x W`` float64 per direction)."""
    items = list(items)
    if not is_active():
        return list(fn(items))
    share = items[shard(len(items))]
    outcome: tuple[str, Any]
    try:
        out = list(fn(share)) if share else []
        if len(out) != len(share):
            raise ValueError(f"sharded_map: {len(out)} results for {len(share)} items")
        outcome = ("ok", out)
    except Exception as exc:  # noqa: BLE001 -- raised on every rank below
        outcome = ("error", exc)
    parts: list[Any] | None = [None] * world_size() if is_rank0() else None
    dist.gather_object(outcome, parts, dst=0)
    box: list[Any] = [None]
    if parts is not None:
        box[0] = next((value for kind, value in parts if kind == "error"), None)
    dist.broadcast_object_list(box, src=0, device=_device())
    if box[0] is not None:
        raise box[0]
    if parts is None:
        return None
    return [r for _, value in parts for r in value]


def _device() -> torch.device:
    """The device of the default group's collectives: the current CUDA device for NCCL."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def from_rank0(fn: Callable[[], T]) -> T:
    """``fn()`` run on rank 0 only, its result (picklable) broadcast to every rank; an exception
    it raises is raised on every rank. In one process: ``fn()``."""
    if not is_active():
        return fn()
    box: list[Any] = [None]
    if is_rank0():
        try:
            box[0] = ("ok", fn())
        except Exception as exc:  # noqa: BLE001 -- re-raised on every rank below
            box[0] = ("error", exc)
    dist.broadcast_object_list(box, src=0, device=_device())
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def gather_rows(local: torch.Tensor) -> torch.Tensor:
    """Every rank's ``local [n_r, ...]`` (on the CPU), concatenated in rank order (shares may
    differ in size, and be empty). In one process: ``local``."""
    if not is_active():
        return local
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, local.detach().cpu(), group=None)
    return torch.cat(parts)


# ==================================================================== sharded spectrum
def solver_placement(environ: Mapping[str, str] | None = None) -> str:
    """``NAVCUDA_DIST_SOLVER``: ``"replicated"`` (default) or ``"rank0"``."""
    value = (os.environ if environ is None else environ).get("NAVCUDA_DIST_SOLVER", "replicated")
    if value not in SOLVER_PLACEMENTS:
        raise DistributedError(
            f"NAVCUDA_DIST_SOLVER must be one of {SOLVER_PLACEMENTS}, got {value!r}"
        )
    return value


@dataclass
class ShardedProducts:
    """``V [m, N] -> H V [m, N]`` over all latents from ``local`` over this rank's share.

    ``local`` returns the *mean* over the rank's ``n_local`` latents; the product over all ``n``
    is ``sum_r (n_r / n) mean_r``: each rank scales its product by its share and one sum
    all-reduce per block adds them (``N`` floats per vector: ``m * N * 4`` bytes in float32).
    With ``check`` (the replicated solver) the block's fingerprint is compared across ranks
    first (one all-reduce of two numbers): ranks whose eigensolvers drifted apart raise
    :class:`DistributedError` instead of summing products of different vectors.

    Counts what it did: ``blocks``, ``vectors``, ``bytes`` all-reduced, and the seconds spent in
    the local products (``compute_s``) and in the collectives (``comm_s``, waiting for the
    slowest rank included).
    """

    local: Callable[[torch.Tensor], torch.Tensor]
    n_local: int
    n: int
    check: bool = True
    blocks: int = 0
    vectors: int = 0
    bytes: int = 0
    compute_s: float = 0.0
    comm_s: float = 0.0
    log: list[tuple[float, float]] = field(default_factory=list)

    @property
    def weight(self) -> float:
        return self.n_local / self.n

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        if not is_active():
            return self.local(v)
        t0 = time.perf_counter()
        if self.check:
            _check_identical(v)
        t1 = time.perf_counter()
        z = self.local(v) * self.weight
        _sync(z)
        t2 = time.perf_counter()
        dist.all_reduce(z)
        _sync(z)
        t3 = time.perf_counter()
        self.blocks += 1
        self.vectors += v.shape[0]
        self.bytes += z.numel() * z.element_size()
        self.compute_s += t2 - t1
        self.comm_s += (t1 - t0) + (t3 - t2)
        self.log.append((t2 - t1, (t1 - t0) + (t3 - t2)))
        return z

    def describe(self) -> dict[str, Any]:
        """A JSON-able record of the communication (stored in the direction set)."""
        return {
            "world_size": world_size(),
            "n_latents_local": self.n_local,
            "allreduce_blocks": self.blocks,
            "allreduce_bytes": self.bytes,
            "compute_s": round(self.compute_s, 4),
            "comm_s": round(self.comm_s, 4),
        }


def _sync(t: torch.Tensor) -> None:
    if t.device.type == "cuda":
        torch.cuda.synchronize(t.device)


def _check_identical(v: torch.Tensor) -> None:
    """Raise unless ``v`` is bitwise the same on every rank (compared by two float64 sums)."""
    d = v.detach().double()
    f = torch.stack([d.sum(), (d * d).sum()])
    both = torch.cat([f, -f])
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    if not torch.equal(both[:2], -both[2:]):
        raise DistributedError(
            "the ranks' eigensolver blocks differ (their linear algebra is not bitwise "
            "reproducible across these processes, e.g. different CPUs or BLAS builds); run the "
            "solver on rank 0 only: NAVCUDA_DIST_SOLVER=rank0"
        )


def solve_sharded(
    solve: Callable[[Callable[[torch.Tensor], torch.Tensor]], T],
    products: ShardedProducts,
    n_params: int,
    dtype: torch.dtype,
    device: torch.device | str,
    placement: str | None = None,
) -> T:
    """``solve(hvp)`` with the sharded products: in one process ``solve(products)``.

    ``"replicated"``: every rank runs ``solve`` (deterministic, on identical all-reduced
    products, so every rank holds the same result). ``"rank0"``: rank 0 runs it and broadcasts
    each block ``[m, n_params]`` (``dtype`` on ``device``) before the products, which are summed
    onto rank 0 (a reduce); the other ranks serve products until rank 0 is done, then receive
    its result (or the exception it raised)."""
    place = solver_placement() if placement is None else placement
    if place not in SOLVER_PLACEMENTS:
        raise ValueError(f"placement must be one of {SOLVER_PLACEMENTS}, got {place!r}")
    if not is_active():
        return solve(products)
    if place == "replicated":
        products.check = True
        return solve(products)
    products.check = False
    dev = torch.device(device)
    if is_rank0():
        outcome: tuple[str, Any]
        try:
            outcome = ("ok", solve(lambda v: _lead_products(products, v, dev)))
        except Exception as exc:  # noqa: BLE001 -- sent to the others, raised below
            outcome = ("error", exc)
        dist.broadcast(torch.tensor([-1], dtype=torch.int64, device=dev), src=0)
        box: list[Any] = [outcome]
    else:
        _serve_products(products, n_params, dtype, dev)
        box = [None]
    dist.broadcast_object_list(box, src=0, device=_device())
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def _lead_products(products: ShardedProducts, v: torch.Tensor, dev: torch.device) -> torch.Tensor:
    t0 = time.perf_counter()
    dist.broadcast(torch.tensor([v.shape[0]], dtype=torch.int64, device=dev), src=0)
    v = v.contiguous()
    dist.broadcast(v, src=0)
    t1 = time.perf_counter()
    z = products.local(v) * products.weight
    _sync(z)
    t2 = time.perf_counter()
    dist.reduce(z, dst=0)
    _sync(z)
    t3 = time.perf_counter()
    products.blocks += 1
    products.vectors += v.shape[0]
    products.bytes += 2 * z.numel() * z.element_size()
    products.compute_s += t2 - t1
    products.comm_s += (t1 - t0) + (t3 - t2)
    products.log.append((t2 - t1, (t1 - t0) + (t3 - t2)))
    return z


def _serve_products(
    products: ShardedProducts, n_params: int, dtype: torch.dtype, dev: torch.device
) -> None:
    """The other ranks' side of the ``"rank0"`` placement: products until rank 0 says stop."""
    header = torch.zeros(1, dtype=torch.int64, device=dev)
    while True:
        dist.broadcast(header, src=0)
        m = int(header)
        if m < 0:
            return
        v = torch.empty(m, n_params, dtype=dtype, device=dev)
        dist.broadcast(v, src=0)
        dist.reduce(products.local(v) * products.weight, dst=0)
        products.blocks += 1
        products.vectors += m

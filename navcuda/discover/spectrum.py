"""The spectrum method: top eigenvectors of the perceptual Hessian of one layer (paper §3.3).

``H`` is the Hessian at zero shift of ``L(delta) = E_z d(G_theta(z), G_{theta+delta}(z))`` w.r.t.
the raw kernel of one layer (:class:`navcuda.hessian.PerceptualHessian`). Its top eigenvectors are
the weight shifts that change the images most, perceptually; the paper uses them as directions.

Solvers (``solver=``): ``"lobpcg"`` (the default), ``"block"`` and ``"power"`` (the paper /
official code, kept as the reference), in :mod:`navcuda.discover.eigensolvers`.

Both block solvers use exact Gauss-Newton products by default (``hvp="gn"``; the Hessian at zero
shift *is* the Gauss-Newton matrix). Finite differences (``hvp="fd"``) run with ``"block"`` or
``"power"`` only (``solver=None`` picks ``"block"`` for them): they are not exactly linear in the
vector (O(eps) kinks and asymmetry), and LOBPCG, which builds the products of its search
directions as linear combinations of products already computed, drifts away from the operator
and diverges with them (measured on the bundled model: Ritz values 1e22 within 50 iterations),
while subspace iteration recomputes every product and settles at residuals ~1e-2, the FD error.

Every result carries eigenvalues (``DirectionSet.values``) and, in ``extra``, the final residual of
every vector computed with the same HVP, the iterations, the number of HVPs and whether the
tolerance was met, plus the metric and Hessian set-up (``extra["hessian"]``).

Metric: ``metric="auto"`` uses LPIPS(VGG) when its backbone file is supplied or cached, else the
offline fallback (``"toy-regressor"`` on the bundled toy model, ``"random-vgg"`` otherwise; see
:func:`navcuda.metrics.perceptual.resolve_metric_name`); the name used is stored in the set.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from navcuda import distributed as dist
from navcuda._checks import positive_int
from navcuda.discover import params as P
from navcuda.discover import spectrum_memory as SM
from navcuda.discover.calibrate import DEFAULT_TARGET_RMS, calibrate_amplitudes, label_hparam
from navcuda.discover.eigensolvers import (
    SpectrumResult,
    block_eigensolver,
    block_size,
    lobpcg_eigensolver,
    power_eigensolver,
)
from navcuda.io.directions import DirectionSet
from navcuda.models.default import is_toy_model
from navcuda.models.interface import ShiftableGenerator

__all__ = [
    "HVPS",
    "SOLVERS",
    "SPECTRUM_PARAMS",
    "SpectrumResult",
    "block_eigensolver",
    "discover_spectrum",
    "lobpcg_eigensolver",
    "power_eigensolver",
]

SOLVERS = ("lobpcg", "block", "power")
HVPS = ("gn", "fd")


def discover_spectrum(
    generator: ShiftableGenerator,
    layer: int | str,
    k: int = 64,
    solver: str | None = None,
    hvp: str | None = None,
    metric: str | object = "auto",
    backbone_path: str | os.PathLike | None = None,
    n_latents: int = 512,
    batch_size: int | None = None,
    eps: float = 0.1,
    iterations: int = 20,
    max_iters: int = 50,
    tol: float | None = None,
    oversample: int | None = None,
    resize: int | None = 64,
    truncation_psi: float = 1.0,
    calibrate: bool = True,
    target_rms: float = DEFAULT_TARGET_RMS,
    seed: int = 0,
    progress: bool = True,
    block_dtype: str | torch.dtype = "auto",
    label: int | None = None,
    memory_budget: int | str | None = "auto",
    checkpoint: str | os.PathLike | None = None,
) -> DirectionSet:
    """Top-``k`` eigenvectors of the perceptual Hessian of ``layer`` (module docstring).

    Args:
        solver: ``"lobpcg"``, ``"block"`` or ``"power"`` (the paper's reference); default
            ``"lobpcg"``, or ``"block"`` for ``hvp="fd"`` (LOBPCG needs exact products: module
            docstring).
        hvp: ``"gn"`` (exact Gauss-Newton products) or ``"fd"`` (central differences with
            ``eps``); default ``"gn"`` for the block solvers and ``"fd"`` (the paper's) for power.
        metric: ``"auto"``, a name of :data:`navcuda.metrics.perceptual.METRIC_NAMES`, or a
            metric object; ``backbone_path``: the LPIPS VGG checkpoint file.
        n_latents: z shared by every vector (paper: 512); ``batch_size``: samples per chunk
            (default: 8 for exact GN products -- the official batch; on the bundled model
            ~85 % of the speed at 32 with 0.28 of its peak memory, 14.5 vs 51.5 MB for 64 x 64
            products; on a 512-channel ``convs.3`` at 32 px 1.58 s per product over 16 latents
            against 1.44 s at 16, for 400 vs 558 MB -- and 32 for finite differences, ~15 %
            faster than 8 there).
        iterations: power steps per vector (paper: 20); ``max_iters``/``tol``/``oversample``:
            block solvers. ``tol`` defaults to 1e-3 with exact products and to 3e-2 with
            finite differences, whose error keeps the residuals above ~1e-2 (bundled model,
            ``eps=0.1``: 1.6e-2 after 8 iterations; at 1e-3 all ``max_iters`` would run).
        resize: images are resized to ``resize`` (nearest, as the official code) before the
            metric; ``None`` keeps them.
        calibrate/target_rms: recommended amplitudes (RMS image change, as the other methods).
        label: a conditional generator's class for every latent (None: labels drawn with the
            latents); either way each latent's label is the same in every render.
        block_dtype: ``"float64"``, ``"float32"`` or ``"auto"`` (float32 for LOBPCG with
            ``tol >= 1e-4``, float64 otherwise): storage of LOBPCG's blocks on the host
            (float32 halves the solver's memory and keeps its iterates at such tolerances; see
            :func:`lobpcg_eigensolver`). The dtype used is recorded in ``hparams``.
        memory_budget: bytes, ``"24GB"``, ``"50%"`` of the free memory, ``"auto"`` (60 % of the
            memory free on the generator's device) or ``None`` (no budget: every latent
            cached, nothing measured up front). The eigensolver's host blocks (on the CPU) or
            the products' rows (on a GPU) come out of it, the rest bounds the Hessian's caches
            (:class:`~navcuda.hessian.PerceptualHessian` ``memory_budget``: past it, latents are
            recomputed per block and peak memory stops growing with ``n_latents``). With
            ``progress`` the memory model and the expected time are printed before the run
            (:func:`navcuda.discover.spectrum_memory.report`); a budget that one chunk does not
            fit raises :class:`~navcuda.memory_budget.MemoryBudgetError` with the figures.
        checkpoint: LOBPCG only: a file where the solver's state is written (atomically, with a
            checksum) after every block of products, and resumed from when it exists: a run
            stopped at any point loses at most the block under way, and its result is the one
            of an uninterrupted run, bit for bit. It holds the solver's blocks (the memory
            model's "solver" figure, on disk: 4.5 GB for top-64 of a 512-channel 3x3 layer) and
            is kept after the run (a rerun returns at once; a larger ``max_iters`` or smaller
            ``tol`` continues it): delete it when done. It must come from the same generator,
            layer, latents, metric and solver settings (a named ``ValueError`` says which
            differs); ``batch_size``, ``memory_budget`` and the number of processes may change
            (the products then differ by float rounding). Several processes: rank
            0 writes it, and it must be on a filesystem every rank reads.
    Returns a ``DirectionSet`` with ``basis="weight"`` (unit eigenvectors), eigenvalues as
    ``values`` and the residuals in ``extra``.
    """
    from navcuda.hessian import PerceptualHessian
    from navcuda.metrics.perceptual import make_metric, resolve_metric_name

    if solver is None:
        solver = "block" if hvp == "fd" else "lobpcg"
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if hvp is None:
        hvp = "fd" if solver == "power" else "gn"
    if hvp not in HVPS:
        raise ValueError(f"hvp must be one of {HVPS}, got {hvp!r}")
    if solver == "lobpcg" and hvp == "fd":
        raise ValueError(
            "solver='lobpcg' needs exact products and diverges with finite differences (it "
            "reuses products by linearity, which FD products do not have); use hvp='gn' (exact, "
            "the default), or solver='block' or solver='power' for hvp='fd'"
        )
    if checkpoint is not None and solver != "lobpcg":
        raise ValueError(f"checkpoint applies to solver='lobpcg' only, not {solver!r}")
    if batch_size is None:
        batch_size = 8 if hvp == "gn" else 32
    counts = (("n_latents", n_latents), ("max_iters", max_iters), ("iterations", iterations))
    for name, value in counts:
        positive_int(value, name)
    if tol is None:
        tol = 3e-2 if hvp == "fd" else 1e-3
    if not (tol > 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    dtypes = {"float64": torch.float64, "float32": torch.float32}
    block_dtype = str(block_dtype).removeprefix("torch.")
    if block_dtype == "auto":
        block_dtype = "float32" if solver == "lobpcg" and tol >= 1e-4 else "float64"
    if block_dtype not in dtypes:
        raise ValueError(f"block_dtype must be 'auto', 'float64' or 'float32', got {block_dtype!r}")
    if block_dtype != "float64" and solver != "lobpcg":
        raise ValueError(f"block_dtype={block_dtype!r} applies to solver='lobpcg' only")
    dev = generator.device
    if isinstance(metric, str):
        metric_name = resolve_metric_name(metric, is_toy_model(generator), backbone_path)
        kw = {"backbone_path": backbone_path} if metric_name.startswith("lpips") else {}
        metric_obj = make_metric(metric_name, **kw)
    else:
        metric_obj = metric
        metric_name = getattr(metric, "name", type(metric).__name__)
    metric_obj = metric_obj.to(dev)
    inputs = generator.sample(n_latents, seed, truncation_psi=truncation_psi, label=label)
    # several processes (navcuda.distributed): each holds its share of the latents
    inputs, progress = dist.shard_inputs(inputs), progress and dist.is_rank0()
    n = math.prod(generator.layer(layer).weight_shape)
    p = 1 if solver == "power" else block_size(k, oversample, n)
    host = SM.solver_bytes(solver, k, p, n, dtypes[block_dtype])
    row = n * torch.finfo(generator.dtype).bits // 8
    budget, hess_budget = SM.hessian_budget(memory_budget, torch.device(dev), host, p, row)
    hess = PerceptualHessian(generator, layer, inputs, metric_obj, batch_size=batch_size,
                             resize=resize, progress=progress,
                             memory_budget=hess_budget, budget_product=hvp)  # fmt: skip
    shape = hess.shape
    if progress and budget is not None:
        print(SM.report(hess.memory, solver=solver, k=k, p=p, n=n, block_dtype=dtypes[block_dtype],
                        device=torch.device(dev), budget=budget, max_iters=max_iters,
                        iterations=iterations, done=_products_done(checkpoint)),
              file=sys.stderr)  # fmt: skip

    def hvp_fn(v: torch.Tensor) -> torch.Tensor:
        blk = v.reshape(v.shape[0], *shape)
        out = hess.hvp_gn(blk) if hvp == "gn" else hess.hvp_fd(blk, eps=eps)
        return out.reshape(v.shape[0], n)

    common = {"seed": seed, "dtype": hess.dtype, "device": hess.device, "progress": progress}
    if solver == "power":
        solve = partial(power_eigensolver, n=n, k=k, iterations=iterations, tol=None, **common)
    else:
        if solver == "lobpcg":
            fn, common["block_dtype"] = lobpcg_eigensolver, dtypes[block_dtype]
        else:
            fn = block_eigensolver
        solve = partial(fn, n=n, k=k, oversample=oversample, max_iters=max_iters, tol=tol, **common)
    if checkpoint is not None:
        key = {"fingerprint": generator.fingerprint(), "layer": hess.layer, "n": n, "k": k,
               "p": p, "block_dtype": block_dtype, "n_latents": n_latents, "seed": seed,
               "truncation_psi": truncation_psi, "label": label, "resize": resize,
               "metric": metric_name}  # fmt: skip
        solve = _resumable(solve, Path(checkpoint), key, progress)
    # one process: solve(hvp_fn); several: every block's products summed over the ranks' shares
    products = dist.ShardedProducts(hvp_fn, hess.n, n_latents)
    res = dist.solve_sharded(solve, products, n, hess.dtype, hess.device)
    vectors = res.vectors.float().cpu().reshape(k, *shape)
    ds = DirectionSet(
        layer=hess.layer,
        basis="weight",
        coefficients=vectors,
        amplitudes=torch.full((k,), float("nan")),
        method="spectrum",
        weight_shape=shape,
        names=[f"eig{i}" for i in range(k)],
        fingerprint=generator.fingerprint(),
        model=generator.architecture,
        hparams={
            "k": k,
            "solver": solver,
            "hvp": hvp,
            "n_latents": n_latents,
            "eps": eps,
            "iterations": iterations,
            "max_iters": max_iters,
            "tol": tol,
            "oversample": oversample,
            "resize": resize,
            "batch_size": batch_size,
            "truncation_psi": truncation_psi,
            "target_rms": target_rms,
            "block_dtype": block_dtype,
            "memory_budget": budget,
            **label_hparam(label),
        },  # fmt: skip
        seed=seed,
        metric=metric_name,
        values=res.values.float(),
        extra={
            "residuals": [float(r) for r in res.residuals],
            "iterations": res.iterations,
            "hvp_count": res.hvp_count,
            "converged": res.converged,
            "residual_history": res.history,
            "hessian": hess.describe(),
            "gn_mode": hess.gn_mode_used,
        },
    )
    if dist.is_active():
        ds.extra["hessian"]["n_latents"] = n_latents
        ds.extra["distributed"] = {**products.describe(), "solver": dist.solver_placement()}
    if calibrate:
        ds.amplitudes = calibrate_amplitudes(
            generator, list(ds), target=target_rms, seed=seed, label=label, progress=progress
        )
    return ds


#: ``format`` of the checkpoint files of :func:`discover_spectrum`.
_FORMAT = "navcuda-spectrum-state"


def _products_done(path: str | Path | None) -> int:
    """The products a checkpoint at ``path`` has spent (0 without one, or one unreadable: it is
    checked, and named, when the solver loads it), read without loading its blocks."""
    if path is None or not Path(path).is_file():
        return 0
    try:
        saved = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        return int(saved["state"]["count"]) if saved.get("format") == _FORMAT else 0
    except Exception:  # noqa: BLE001 - the load that follows names what is wrong
        return 0


def _resumable(solve: Callable, path: Path, key: dict, progress: bool) -> Callable:
    """``solve`` (a partial of :func:`lobpcg_eigensolver`) saving its state to ``path`` after
    every iteration (rank 0 writes) and resuming from it when it exists (read by each rank
    that runs the solver, after checking its checksum and that ``key`` matches)."""
    from navcuda.io.checksum import verify_state_checksum
    from navcuda.training import atomic_torch_save

    exists = dist.from_rank0(path.is_file)

    def save(state: dict) -> None:
        if dist.is_rank0():
            atomic_torch_save({"format": _FORMAT, "version": 1, **key, "state": state}, path)

    def load() -> dict:
        if not path.is_file():
            raise FileNotFoundError(
                f"spectrum checkpoint {str(path)!r} exists on rank 0 but not on this rank: put it "
                "on a filesystem every rank reads"
            )
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file: say which and what to do
            raise ValueError(
                f"cannot read spectrum checkpoint {str(path)!r} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}): delete it to start over"
            ) from exc
        if not isinstance(saved, dict) or saved.get("format") != _FORMAT:
            raise ValueError(f"{str(path)!r} is not a navcuda spectrum checkpoint")
        verify_state_checksum(
            saved, path, ValueError, "spectrum checkpoint", "delete it to start over"
        )
        diff = [f"{name} {saved.get(name)!r} there, {value!r} here"
                for name, value in key.items() if saved.get(name) != value]  # fmt: skip
        if diff:
            raise ValueError(
                f"spectrum checkpoint {str(path)!r} belongs to another run ({'; '.join(diff)}): "
                "delete it or pass another checkpoint path"
            )
        state = saved["state"]
        if progress:
            print(f"resuming {path} at iteration {state['it']} ({state['count']} products)",
                  file=sys.stderr)  # fmt: skip
        return state

    def run(hvp: Callable) -> SpectrumResult:
        res = solve(hvp, on_iteration=save, state=load() if exists else None)
        if progress and path.is_file():
            print(f"spectrum: solver state kept in {path} ({path.stat().st_size / 1e9:.2g} GB; "
                  "a rerun returns at once, a larger max_iters continues): delete it when done",
                  file=sys.stderr)  # fmt: skip
        return res

    return run


def _metric_ok(value: object) -> bool:
    if isinstance(value, str):
        from navcuda.metrics.perceptual import METRIC_NAMES

        return value == "auto" or value in METRIC_NAMES
    return callable(value)  # a metric object (Python API)


def _size_ok(value: object) -> bool:
    from navcuda.memory_budget import MemoryBudgetError, parse_size

    if value == "auto":
        return True
    try:
        parse_size(value)
    except MemoryBudgetError:
        return False
    return True


def _dtype_ok(value: object) -> bool:
    return str(value).removeprefix("torch.") in ("auto", "float64", "float32")


#: The parameters of :func:`discover_spectrum` (defaults from its signature; ``--list-params``).
SPECTRUM_PARAMS = P.declare(
    discover_spectrum,
    k=P.K,
    solver=P.choice("eigensolver (None: lobpcg, or block for hvp=fd)", SOLVERS, none_ok=True),
    hvp=P.choice(
        "Hessian-vector products: exact Gauss-Newton or finite differences (None: gn, "
        "or fd for solver=power)",
        HVPS,
        none_ok=True,
    ),
    metric=P.other(
        "perceptual metric (the CLI's --metric)",
        "metric",
        "'auto', 'lpips-vgg', 'lpips-alex', 'random-vgg', 'toy-regressor', 'pixel' or a metric "
        "object",
        _metric_ok,
    ),
    backbone_path=P.path("LPIPS VGG backbone file (the CLI's --backbone)"),
    n_latents=P.integer("latents z shared by every vector (paper: 512)", 1),
    batch_size=P.integer("samples per chunk (None: 8 for gn, 32 for fd)", 1, none_ok=True),
    eps=P.number("finite-difference step (hvp=fd)", 0, lo_open=True),
    iterations=P.integer("power steps per vector (solver=power; paper: 20)", 1),
    max_iters=P.integer("iterations of the block solvers at most", 1),
    tol=P.number(
        "residual |Hv - lv|/|l| to stop at (None: 1e-3 for gn, 3e-2 for fd)",
        0,
        lo_open=True,
        none_ok=True,
    ),
    oversample=P.integer("extra vectors in the block (None: max(4, k/4))", 0, none_ok=True),
    resize=P.integer("image side before the metric (None: as rendered)", 1, none_ok=True),
    truncation_psi=P.TRUNCATION,
    calibrate=P.CALIBRATE,
    target_rms=P.TARGET_RMS,
    seed=P.SEED,
    progress=P.PROGRESS,
    block_dtype=P.other(
        "storage of LOBPCG's blocks (auto: float32 for tol >= 1e-4)",
        "dtype",
        "'auto', 'float64' or 'float32' (or a torch dtype)",
        _dtype_ok,
    ),
    label=P.LABEL,
    checkpoint=P.CHECKPOINT,
    memory_budget=P.other(
        "memory for the run: bytes, '24GB', '50%' of the free memory, 'auto' (60 % of it) or "
        "None (every latent cached); past it latents are recomputed per block",
        "size",
        "'auto', None, a number of bytes or a size such as '24GB' or '50%'",
        _size_ok,
        none_ok=True,
    ),
)

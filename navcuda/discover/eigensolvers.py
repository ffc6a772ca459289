"""Block eigensolvers for the top eigenpairs of a symmetric operator given by its products.

Each takes ``hvp: V [m, N] -> H V [m, N]`` on flattened vectors (any symmetric positive
semi-definite operator: :func:`navcuda.discover.spectrum.discover_spectrum` passes the perceptual
Hessian's products) and keeps its blocks on the host, one column chunk at a time where it can.

``"power"`` -- the paper / official code, kept as the reference: one vector at a time,
    ``iterations`` (default 20) steps ``v <- P(H v / |v|)`` with ``P`` the Gram-Schmidt projection
    onto the orthogonal complement of the vectors already found (deflation), central finite
    differences (``hvp="fd"``, ``eps=0.1``); ``tol`` optionally stops a vector early.
``"lobpcg"`` -- discover_spectrum's default: block LOBPCG (locally optimal block
    preconditioned conjugate gradient, here unpreconditioned) on ``k + oversample`` vectors with
    soft locking: each iteration multiplies the active Ritz vectors' residuals by ``H`` and takes
    the Ritz pairs of the span of the Ritz vectors, those residuals and the previous search
    directions. Same cost per iteration as ``"block"``, far fewer iterations (top-16 of the
    bundled model's ``convs.3`` to residual 1e-2: 102 HVPs against 170, and a 5x smaller median
    residual).
``"block"`` -- subspace iteration on a block of ``k + oversample`` vectors with a Rayleigh-Ritz
    step every iteration and locking of converged vectors (the default before ``"lobpcg"``).
    Every iteration costs one batched block of HVPs (all active vectors and latents in one pass
    over chunks) and yields Ritz values, Ritz vectors and their residuals
    ``|H x - theta x| / |theta|`` for free; it stops when the top ``k`` residuals are below
    ``tol`` (or after ``max_iters``). Both block solvers stop that way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from navcuda._summary import short_repr

__all__ = [
    "HVPFn",
    "SpectrumResult",
    "block_eigensolver",
    "block_size",
    "lobpcg_eigensolver",
    "power_eigensolver",
]


#: ``V [m, N] -> H V [m, N]`` on flattened vectors.
HVPFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(repr=False)
class SpectrumResult:
    """Top eigenpairs of a symmetric operator: ``vectors [k, N]`` (unit rows), ``values [k]``
    (descending), ``residuals [k]`` = ``|H v - lambda v| / |lambda|``, the iterations run, the
    number of HVPs spent and whether every residual reached the tolerance."""

    vectors: torch.Tensor
    values: torch.Tensor
    residuals: torch.Tensor
    iterations: int
    hvp_count: int
    converged: bool
    history: list[float] = field(default_factory=list)

    __repr__ = short_repr  # one line, tensors as shapes


def _rel_residuals(hx: torch.Tensor, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``|H x - theta x| / |theta|`` per row (float64), computed in the rows' dtype."""
    r = (hx - theta.to(x.dtype).unsqueeze(1) * x).norm(dim=1).double()
    return r / theta.abs().clamp_min(torch.finfo(theta.dtype).tiny)


def _check_k(k: int, n: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k must be an int in [1, {n}] (the layer's number of weights), got {k!r}")


def power_eigensolver(
    hvp: HVPFn,
    n: int,
    k: int,
    iterations: int = 20,
    tol: float | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> SpectrumResult:
    """The official method: deflated power iteration, one vector at a time.

    Vector ``i`` starts random (``N(0, 1)`` entries), projected onto the complement of vectors
    ``0..i-1``; each step is ``v <- P(H v / |v|)`` with ``H v`` evaluated at the unnormalised
    ``v`` (the official ``forward_step``: FD perturbations ``eps v``, divided by ``|v|``), for
    ``iterations`` steps, or until the relative change of the normalised vector drops below
    ``tol``. The final eigenvalue is the Rayleigh quotient and the residual costs one more HVP per
    vector.
    """
    _check_k(k, n)
    gen = torch.Generator().manual_seed(seed)
    found: list[torch.Tensor] = []
    values, residuals, count, all_ok, history = [], [], 0, True, []

    def project(v: torch.Tensor) -> torch.Tensor:
        for b in found:  # classical Gram-Schmidt against unit vectors, as the official code
            v = v - (v @ b) * b
        return v

    bar = tqdm(total=k * iterations, desc="power", unit="hvp", disable=not progress)
    for _ in range(k):
        v = project(torch.randn(n, generator=gen, dtype=torch.float64).to(device)).to(dtype)
        for _step in range(iterations):
            # as the official forward_step: perturbation eps * v (v not normalised), result / |v|
            hv = hvp(v.unsqueeze(0))[0] / v.norm()
            count += 1
            bar.update(1)
            new = project(hv.double()).to(dtype)
            change = float((new / new.norm() - v / v.norm()).norm())
            v = new
            if tol is not None and change < tol:
                bar.update(iterations - _step - 1)
                break
        x = (v.double() / v.double().norm()).to(dtype)
        hx = hvp(x.unsqueeze(0))[0]
        count += 1
        theta = (x.double() @ hx.double()).reshape(1)
        res = _rel_residuals(hx.double().unsqueeze(0), x.double().unsqueeze(0), theta)
        all_ok &= tol is None or float(res) < tol
        found.append(x.double())
        values.append(theta)
        residuals.append(res)
        history.append(float(res))
        bar.set_postfix(last_residual=f"{float(res):.2e}")
    bar.close()
    vals = torch.cat(values)
    order = torch.argsort(vals, descending=True)
    vecs = torch.stack(found)[order].to(dtype)
    return SpectrumResult(vecs, vals[order], torch.cat(residuals)[order], iterations, count,
                          bool(all_ok), history)  # fmt: skip


def _products(hvp: HVPFn, q: torch.Tensor, device, dtype) -> torch.Tensor:
    """``H q`` for the CPU rows ``q``, computed on ``device`` in ``dtype`` and returned on the
    CPU in ``q``'s dtype; a wrong shape or a non-finite product raises."""
    z = hvp(q.to(device, dtype))
    if not isinstance(z, torch.Tensor) or tuple(z.shape) != tuple(q.shape):
        got = list(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"hvp must return [{q.shape[0]}, {q.shape[1]}] products, got {got}")
    if not _all_finite(z):
        raise FloatingPointError("hvp returned NaN or inf (a diverged or broken generator?)")
    return z.to(device="cpu", dtype=q.dtype)


def _all_finite(z: torch.Tensor, cols: int = 1 << 16) -> bool:
    """``torch.isfinite(z).all()`` one column chunk at a time: on a whole block it allocates
    ``abs(z)`` and three boolean blocks (1.75 blocks)."""
    flat = z.reshape(z.shape[0], -1)
    return all(
        bool(torch.isfinite(flat[:, c : c + cols]).all()) for c in range(0, flat.shape[1], cols)
    )


def block_size(k: int, oversample: int | None, n: int) -> int:
    """``p = k + oversample`` rows of the block solvers (default oversampling ``max(4, k // 4)``),
    at most ``n``."""
    return min(n, k + (max(4, k // 4) if oversample is None else int(oversample)))


def _start_block(
    n: int,
    k: int,
    oversample: int | None,
    seed: int,
    init: torch.Tensor | None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """The block solvers' orthonormal starting rows ``[p, N]``, ``p = k + oversample`` (default
    oversampling ``max(4, k // 4)``): ``init`` rows first, seeded Gaussian rows after.

    ``dtype`` float32: orthonormalised in place from the float64 Gram matrix
    (:func:`_orthonormalize`) instead of a float64 QR, whose copies and workspace made the
    start the solver's peak (~4 float64 blocks)."""
    _check_k(k, n)
    p = block_size(k, oversample, n)
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(p, n, generator=gen, dtype=torch.float64)
    if init is not None:
        m = min(p, init.shape[0])
        q[:m] = init[:m].reshape(m, n).double().cpu()
    if dtype == torch.float64:
        return torch.linalg.qr(q.t())[0].t().contiguous()
    q = q.to(dtype)
    return _orthonormalize(q, None)[0]


def block_eigensolver(
    hvp: HVPFn,
    n: int,
    k: int,
    oversample: int | None = None,
    max_iters: int = 50,
    tol: float = 1e-3,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    progress: bool = True,
    init: torch.Tensor | None = None,
    lock: bool = True,
) -> SpectrumResult:
    """Subspace iteration with Rayleigh-Ritz and locking on ``p = k + oversample`` vectors.

    Each iteration multiplies the *active* block by ``H`` (one batched block of HVPs), takes the
    Ritz pairs of the span of the locked and active vectors (their products are known exactly),
    and computes the residuals of the top ``k``; it stops when all are below ``tol``. Otherwise
    the leading run of converged Ritz vectors is locked (``lock``: kept with their products, no
    longer multiplied) and the rest is replaced by ``orth(H x)`` deflated against them. Vector
    ``i`` converges like ``(lambda_{p+1} / lambda_i)^iter``, hence the oversampling (default
    ``max(4, k // 4)``). ``init [m <= p, N]`` seeds the block (e.g. a previous run's vectors).
    """
    q = _start_block(n, k, oversample, seed, init)
    locked_x = torch.zeros(0, n, dtype=torch.float64)
    locked_hx = torch.zeros(0, n, dtype=torch.float64)
    history: list[float] = []
    bar = _solver_bar("block", max_iters, progress)
    pace = _Pace()
    it, count = 0, 0
    theta = res = x = None
    while it < max_iters:
        z = _products(hvp, q, device, dtype)
        count += q.shape[0]
        it += 1
        blocks = [(locked_x, locked_hx), (q, z)]
        theta, s = _block_ritz(blocks)
        x, hx = _combine(blocks, s, n)  # Ritz vectors [p, N] and their exact products
        del blocks, q, z  # spanned by x now
        res = _rel_residuals(hx[:k], x[:k], theta[:k])
        worst = float(res.max())
        history.append(worst)
        n_lock = int(torch.cumprod((res < tol).int(), 0).sum()) if lock else 0
        trend = _residual_trend(
            history, tol, n_lock, float(theta[0]), pace.per_iter(x.shape[0] - n_lock, count)
        )
        bar.set_postfix(trend, refresh=False)
        bar.update(1)
        if worst < tol:
            break
        locked_x, locked_hx = x[:n_lock], hx[:n_lock]
        nxt = hx[n_lock:]
        nxt = nxt - (nxt @ locked_x.t()) @ locked_x
        q = torch.linalg.qr(nxt.t())[0].t().contiguous()
    bar.close()
    assert theta is not None and res is not None and x is not None
    vecs = x[:k] / x[:k].norm(dim=1, keepdim=True)
    return SpectrumResult(vecs.to(dtype), theta[:k], res, it, count, bool(res.max() < tol),
                          history)  # fmt: skip


def _solver_bar(name: str, max_iters: int, progress: bool) -> tqdm:
    """The block solvers' bar: iterations counted without a total, so no ETA against
    ``max_iters`` (they stop at ``tol``, usually long before); the postfix shows the residual
    trend (:func:`_residual_trend`). Shown before the first block of products, which costs an
    iteration."""
    bar = tqdm(desc=f"{name} (<= {max_iters} iters)", unit="iter", disable=not progress)
    bar.set_postfix_str("first block of products", refresh=True)
    return bar


class _Pace:
    """Seconds per product of the products this process has run since it was made (a resumed
    run's ``done`` products and its loading left out), and what an iteration of ``m`` products
    costs at that pace once the solver's count is ``count``."""

    def __init__(self, done: int = 0) -> None:
        self.start, self.done = time.perf_counter(), done

    def per_iter(self, m: int, count: int) -> float | None:
        ran = count - self.done
        if ran <= 0:
            return None
        return m * (time.perf_counter() - self.start) / ran


def _residual_trend(
    history: list[float], tol: float, locked: int, top: float, per_iter: float | None = None
) -> dict[str, str]:
    """Postfix of a block solver's bar: the largest residual against ``tol``, its mean factor
    per iteration over the last few iterations and, while it falls, the iterations that rate
    needs to reach ``tol``, with their time at ``per_iter`` seconds each (the next iteration's
    products at this run's pace: an upper bound, as more vectors lock). The random start's
    residual is left out once there are two after it: the first step's fall (158 to 0.61 on a
    512-channel layer) is no guide to the next ones."""
    worst = history[-1]
    out = {"max_residual": f"{worst:.2e}", "tol": f"{tol:.0e}"}
    window = (history[1:] if len(history) > 2 else history)[-4:]
    if len(window) >= 2 and window[0] > 0 and worst > 0:
        rate = (worst / window[0]) ** (1 / (len(window) - 1))
        out["trend"] = f"x{rate:.2f}/iter"
        if worst > tol:
            out["to_tol"] = "?"
            if rate < 1:
                iters = math.ceil(math.log(tol / worst) / math.log(rate))
                out["to_tol"] = f"~{iters} iters"
                if per_iter is not None:
                    out["to_tol"] += f" (~{tqdm.format_interval(iters * per_iter)})"
    out["locked"], out["top"] = str(locked), f"{top:.3g}"
    return out


def _gram(a: torch.Tensor, b: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """``a @ b.T`` in float64: directly for float64 rows, accumulated over column chunks cast
    to float64 for float32 rows (the inner products of float32 blocks keep float64 accuracy)."""
    if a.dtype == torch.float64 and b.dtype == torch.float64:
        return a @ b.t()
    g = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64)
    for lo in range(0, a.shape[1], chunk):
        g.addmm_(a[:, lo : lo + chunk].double(), b[:, lo : lo + chunk].double().t())
    return g


def _project_out(
    b: torch.Tensor, hb: torch.Tensor | None, a: torch.Tensor, ha: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``b`` minus its components along the orthonormal rows ``a``, twice (Kahan's "twice is
    enough"), *in place*; the products ``hb`` (may be None) follow the same linear map."""
    for _ in range(2):
        c = _gram(b, a).to(b.dtype)
        b.addmm_(c, a, alpha=-1.0)
        if hb is not None:
            hb.addmm_(c, ha, alpha=-1.0)
    return b, hb


def _map_rows_(t: torch.Tensor, b: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """``t @ b`` for ``t [r, m]`` (``r <= m``) and ``b [m, N]``, written into ``b``'s first
    ``r`` rows, one column chunk at a time (no second ``[m, N]`` block); returns that view."""
    r = t.shape[0]
    for lo in range(0, b.shape[1], chunk):
        cols = b[:, lo : lo + chunk]
        cols[:r] = t @ cols
    return b[:r]


def _orthonormalize(
    b: torch.Tensor, hb: torch.Tensor | None, rtol: float = 1e-7
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Orthonormal rows spanning those of ``b`` (directions with a singular value below
    ``rtol`` times the largest are dropped), the same linear map applied to ``hb``; both in
    place (``hb`` is overwritten; the results are views of the first rows).

    From the float64 Gram matrix, twice (SVQB: the second pass restores orthonormality), the
    maps applied one column chunk at a time: no copy of the block (a thin SVD of the block,
    used for float64 blocks before, took ~3 blocks of workspace, the solver's peak). float32
    rows: ``rtol`` is raised to 1e-4, below which a direction of a float32 block is mostly
    rounding."""
    if b.shape[0] == 0:
        return b, hb
    first = max(rtol, 1e-4) if b.dtype != torch.float64 else rtol
    for cutoff in (first, 0.0):  # the second pass only restores orthonormality
        e, v = torch.linalg.eigh(_gram(b, b))
        keep = e > cutoff**2 * e.max()
        t = (v[:, keep] / e[keep].sqrt()).t().to(b.dtype)  # rows: orthonormal t @ b
        b = _map_rows_(t, b)
        hb = None if hb is None else _map_rows_(t, hb)
    return b, hb


def lobpcg_eigensolver(
    hvp: HVPFn,
    n: int,
    k: int,
    oversample: int | None = None,
    max_iters: int = 50,
    tol: float = 1e-3,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    progress: bool = True,
    init: torch.Tensor | None = None,
    block_dtype: torch.dtype = torch.float64,
    state: dict | None = None,
    on_iteration: Callable[[dict], None] | None = None,
) -> SpectrumResult:
    """Block LOBPCG (Knyazev 2001) with soft locking on ``p = k + oversample`` vectors.

    Each iteration multiplies the residuals ``W = H x - theta x`` of the active Ritz vectors by
    ``H`` (one batched block of HVPs, as many as :func:`block_eigensolver` spends per iteration)
    and takes the Ritz pairs of the span of the locked vectors, the active Ritz vectors, ``W`` and
    the previous step's directions ``P`` (orthonormalised; every product there is a linear
    combination of products already computed, so it is exact and free). The three-term
    recurrence converges like a Chebyshev-accelerated method: far fewer iterations than subspace
    iteration for the same residuals. Locking, stopping and ``init`` as
    :func:`block_eigensolver`.

    Memory: the solver keeps the Ritz vectors, ``W``, ``P`` and their products, at most six
    blocks of ``[p, N]`` on the host, and updates them in place, one column chunk at a time
    (the Ritz vectors over the old ones, the next ``P`` over the old ``W``): its peak is those six
    blocks, the product's output block included on the CPU (measured by
    ``benchmarks/test_bench_spectrum.py::test_solver_memory``; it held ~8 before). For ``k = 64``
    on an official 512-channel 3x3 layer (``N = 2.36e6``, ``p = 80``) one float64 block is
    1.5 GB: about 9 GB of host memory in float64, 4.5 GB with ``block_dtype=torch.float32``
    (half; inner products and the Rayleigh-Ritz step stay float64): the residuals then level
    off near ``1e-7 * lambda_1 / lambda_k`` (float32 rounding of the stored products), so use
    it with ``tol`` well above that (the default 1e-3 is).

    Resuming: after every block of products ``on_iteration(state)`` receives the solver's
    whole state (the blocks themselves, which the next iteration updates in place: save them
    before returning); passing that dict back as ``state`` continues the run where it stopped,
    bit for bit as a run never stopped (``init`` and ``seed`` are then unused; ``n``, ``k``,
    ``oversample`` and ``block_dtype`` must be the first run's, ``tol`` and ``max_iters`` may
    differ). The state is consumed: its blocks are updated in place and its ``"rest"`` entry
    (``W``, ``P``) is taken out, so that they are freed once replaced.
    """
    if block_dtype not in (torch.float32, torch.float64):
        raise ValueError(f"block_dtype must be torch.float32 or torch.float64, got {block_dtype}")
    if state is None:
        x = _start_block(n, k, oversample, seed, init, block_dtype)
    else:
        x = _check_state(state, n, k, oversample, block_dtype)
    p = x.shape[0]
    bar = _solver_bar("lobpcg", max_iters, progress)
    pace = _Pace(0 if state is None else int(state["count"]))
    # The basis is kept as blocks of orthonormal rows with their products: the Ritz vectors
    # (x, hx), then W and P (``rest``). Never concatenated (every product with the basis is a
    # sum over blocks), and updated in place column chunk by column chunk: the Ritz vectors
    # over the old ones, the next P over the old W; at most six blocks of [p, N] live.
    if state is None:
        hx = _products(hvp, x, device, dtype)
        rest: list[tuple[torch.Tensor, torch.Tensor]] = []
        count, it, history = p, 1, []
        if on_iteration is not None:  # the first block of products is a whole iteration's cost
            on_iteration(_lobpcg_state(x, hx, rest, count, it, history))
    else:
        # taken out of the caller's dict, which outlives the solve: the old W and P must be
        # freed when replaced (held there, a resumed run kept two blocks more: 1.5 GB at top-64
        # of a 512-channel layer)
        hx, rest = state["hx"], [(b, hb) for b, hb in state.pop("rest")]
        count, it, history = int(state["count"]), int(state["it"]), list(state["history"])
        bar.set_postfix_str(f"resumed at iteration {it}, {count} products", refresh=True)
    while True:
        theta, s = _block_ritz([(x, hx), *rest], p)
        _ritz_update_(x, hx, rest, s[:p], s[p:])
        res = _rel_residuals_chunked(hx[:k], x[:k], theta[:k])
        worst = float(res.max())
        history.append(worst)
        if not math.isfinite(worst):
            bar.close()
            raise FloatingPointError(
                f"LOBPCG diverged at iteration {it}: a residual is {worst} (top Ritz value "
                f"{float(theta[0]):.3g}). The products do not come from one fixed symmetric "
                "linear operator, and LOBPCG builds the products of its search directions from "
                "them by linearity; inexact products such as finite differences need "
                "block_eigensolver or power_eigensolver"
            )
        n_lock = int(torch.cumprod((res < tol).int(), 0).sum())
        trend = _residual_trend(
            history, tol, n_lock, float(theta[0]), pace.per_iter(p - n_lock, count)
        )
        bar.set_postfix(trend, refresh=False)
        bar.update(1)
        if worst < tol or it >= max_iters:
            break
        # P: the active Ritz vectors' components along the old W and P (into W's storage)
        prev = _next_directions_(rest, s[p:, n_lock:]) if rest else None
        rest = []
        w = x[n_lock:] * (-theta[n_lock:]).to(block_dtype).unsqueeze(1)
        w += hx[n_lock:]
        w, _ = _orthonormalize(_project_out(w, None, x, hx)[0], None)
        hw = _products(hvp, w, device, dtype) if w.shape[0] else w.new_zeros(0, n)
        count += w.shape[0]
        it += 1
        rest = [(w, hw)]
        if prev is not None:
            prev = _project_out(*prev, x, hx)
            rest.append(_orthonormalize(*_project_out(*prev, w, hw)))
            del prev
        if on_iteration is not None:
            on_iteration(_lobpcg_state(x, hx, rest, count, it, history))
    bar.close()
    del rest, hx  # before the result's rows
    vecs = x[:k] / x[:k].norm(dim=1, keepdim=True)
    return SpectrumResult(vecs.to(dtype), theta[:k], res, it, count, bool(res.max() < tol),
                          history)  # fmt: skip


_COLS = 1 << 16  # columns per chunk of the in-place block updates


def _lobpcg_state(
    x: torch.Tensor,
    hx: torch.Tensor,
    rest: list[tuple[torch.Tensor, torch.Tensor]],
    count: int,
    it: int,
    history: list[float],
) -> dict:
    """LOBPCG's resumable state as ``on_iteration`` receives it (the blocks, not copies) and
    :func:`_check_state` reads it back."""
    return {"x": x, "hx": hx, "rest": [list(b) for b in rest], "count": count, "it": it,
            "history": list(history)}  # fmt: skip


def _check_state(
    state: dict, n: int, k: int, oversample: int | None, block_dtype: torch.dtype
) -> torch.Tensor:
    """The Ritz vectors of a state :func:`lobpcg_eigensolver` handed to ``on_iteration``, after
    checking that it is one (``ValueError`` naming what differs) for this ``n``, ``k``,
    oversampling and ``block_dtype``."""
    p = block_size(k, oversample, n)
    need = ("x", "hx", "rest", "count", "it", "history")
    if not isinstance(state, dict) or any(key not in state for key in need):
        raise ValueError(f"state must be a dict with the entries {need} (from on_iteration)")
    blocks = [state["x"], state["hx"], *(t for pair in state["rest"] for t in pair)]
    for i, t in enumerate(blocks):
        rows_ok = t.shape[0] == p if i < 2 else t.shape[0] <= p
        if t.dim() != 2 or t.shape[1] != n or not rows_ok or t.dtype != block_dtype:
            raise ValueError(
                f"state block {i} is {str(t.dtype).removeprefix('torch.')} {list(t.shape)}; "
                f"this run needs {str(block_dtype).removeprefix('torch.')} [{p}, {n}] blocks "
                f"(k={k}, oversample={oversample})"
            )
    return state["x"]


def _ritz_update_(
    x: torch.Tensor,
    hx: torch.Tensor,
    rest: list[tuple[torch.Tensor, torch.Tensor]],
    sx: torch.Tensor,
    s_rest: torch.Tensor,
) -> None:
    """``x <- sx^T x + sum_b s_b^T b`` (the Ritz vectors, ``x [p, N]``, ``sx [p, p]``, ``s_rest``
    the coefficients of the ``rest`` blocks stacked) and the same for the products, in place, one
    column chunk at a time (a column of the result depends on that column alone)."""
    parts, lo = [], 0
    for b, hb in rest:
        parts.append((s_rest[lo : lo + b.shape[0]].t().to(b.dtype), b, hb))
        lo += b.shape[0]
    st = sx.t().to(x.dtype)
    for c0 in range(0, x.shape[1], _COLS):
        c = slice(c0, c0 + _COLS)
        for side, t in enumerate((x, hx)):
            new = st @ t[:, c]
            for sb, b, hb in parts:
                new.addmm_(sb, (b, hb)[side][:, c])
            t[:, c] = new


def _next_directions_(
    rest: list[tuple[torch.Tensor, torch.Tensor]], s_rest: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """LOBPCG's next ``P``: ``sum_b s_b^T b`` over the ``rest`` blocks (``W`` first, then ``P``;
    ``s_rest [rows, r]``, ``r`` the active Ritz vectors) and the same for the products, written
    over ``W``'s rows when it has ``r`` of them (column chunk by column chunk), else new blocks
    (a locked vector that became active again)."""
    r = s_rest.shape[1]
    w, hw = rest[0]
    if w.shape[0] >= r:
        out, hout = w[:r], hw[:r]
    else:
        out, hout = w.new_empty(r, w.shape[1]), hw.new_empty(r, w.shape[1])
    parts, lo = [], 0
    for b, hb in rest:
        parts.append((s_rest[lo : lo + b.shape[0]].t().to(b.dtype), b, hb))
        lo += b.shape[0]
    for c0 in range(0, w.shape[1], _COLS):
        c = slice(c0, c0 + _COLS)
        for side, t in enumerate((out, hout)):
            new = None
            for sb, b, hb in parts:
                src = (b, hb)[side][:, c]
                new = sb @ src if new is None else new.addmm_(sb, src)
            t[:, c] = new
    return out, hout


def _rel_residuals_chunked(hx: torch.Tensor, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """:func:`_rel_residuals` one column chunk at a time (no ``[k, N]`` temporary)."""
    sq = torch.zeros(x.shape[0], dtype=torch.float64)
    th = theta.to(x.dtype).unsqueeze(1)
    for c0 in range(0, x.shape[1], _COLS):
        c = slice(c0, c0 + _COLS)
        sq += (hx[:, c] - th * x[:, c]).double().square().sum(1)
    return sq.sqrt() / theta.abs().clamp_min(torch.finfo(theta.dtype).tiny)


def _block_ritz(
    blocks: list[tuple[torch.Tensor, torch.Tensor]], p: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``p`` (default: all) Ritz values (descending) and coefficients ``[rows, p]`` in the
    span of the blocks' rows (orthonormal together), from their products."""
    t = torch.cat([torch.cat([_gram(b, hc) for _, hc in blocks], 1) for b, _ in blocks])
    evals, s = torch.linalg.eigh(0.5 * (t + t.t()))
    order = torch.argsort(evals, descending=True)[:p]
    return evals[order], s[:, order]


def _combine(
    blocks: list[tuple[torch.Tensor, torch.Tensor]], s: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``s^T`` times the blocks' rows and products stacked (``[cols, n]`` each, in the blocks'
    dtype), accumulated block by block in place (no stacked copy)."""
    x = blocks[0][0].new_zeros(s.shape[1], n)
    hx = blocks[0][0].new_zeros(s.shape[1], n)
    lo = 0
    for b, hb in blocks:
        part = s[lo : lo + b.shape[0]].t().to(b.dtype)
        x.addmm_(part, b)
        hx.addmm_(part, hb)
        lo += b.shape[0]
    return x, hx

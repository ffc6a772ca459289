"""Spectrum method: the eigensolvers on operators with a known spectrum, and discover_spectrum on a
tiny generator against its explicit Hessian."""

from __future__ import annotations

import copy
import weakref

import pytest
import torch

from navcuda.discover import discover
from navcuda.discover.eigensolvers import block_eigensolver, lobpcg_eigensolver, power_eigensolver
from navcuda.hessian import PerceptualHessian
from navcuda.metrics.perceptual import PixelMSE
from navcuda.models.stylegan2 import Generator


def _operator(n=60, seed=0, decay=0.7):
    """A symmetric PSD matrix with eigenvalues decay**i and a random eigenbasis."""
    g = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0]
    lam = decay ** torch.arange(n, dtype=torch.float64)
    a = (q * lam) @ q.t()
    return a, lam, q


BLOCK_SOLVERS = {"block": block_eigensolver, "lobpcg": lobpcg_eigensolver}


@pytest.mark.parametrize("solver", list(BLOCK_SOLVERS))
@pytest.mark.parametrize("k", [1, 5])
def test_block_solvers_recover_known_spectrum(k, solver):
    a, lam, q = _operator()
    res = BLOCK_SOLVERS[solver](lambda v: v @ a, 60, k, tol=1e-6, max_iters=200, progress=False,
                                dtype=torch.float64)  # fmt: skip
    assert res.converged and res.iterations < 200
    torch.testing.assert_close(res.values, lam[:k], rtol=1e-6, atol=0)
    cos = (res.vectors @ q[:, :k]).abs().diagonal()
    assert float(cos.min()) > 1 - 1e-6
    # the reported residuals are the true ones
    true = (res.vectors @ a - res.values[:, None] * res.vectors).norm(dim=1) / res.values
    torch.testing.assert_close(res.residuals, true, rtol=1e-6, atol=1e-12)
    assert res.hvp_count <= res.iterations * (k + 4)


def test_block_solver_locking_saves_products_not_accuracy():
    a, lam, _ = _operator()
    kw = dict(tol=1e-6, max_iters=200, progress=False, dtype=torch.float64)
    plain = block_eigensolver(lambda v: v @ a, 60, 5, lock=False, **kw)
    locked = block_eigensolver(lambda v: v @ a, 60, 5, **kw)
    assert plain.hvp_count == plain.iterations * (5 + 4)  # every vector, every iteration
    assert locked.converged and locked.hvp_count < plain.hvp_count
    torch.testing.assert_close(locked.values, lam[:5], rtol=1e-6, atol=0)


@pytest.mark.parametrize("solver", list(BLOCK_SOLVERS))
def test_block_solvers_report_non_convergence(solver):
    a, _, _ = _operator(decay=0.99)  # a nearly flat spectrum: hopeless in 3 iterations
    res = BLOCK_SOLVERS[solver](lambda v: v @ a, 60, 4, tol=1e-8, max_iters=3, progress=False,
                                dtype=torch.float64)  # fmt: skip
    assert not res.converged and res.iterations == 3 and float(res.residuals.max()) > 1e-8


def test_lobpcg_needs_fewer_products_than_subspace_iteration():
    """On a slowly decaying spectrum (gap ratio 0.95) subspace iteration converges like
    0.95^iter; LOBPCG's three-term recurrence like its square root."""
    a, lam, _ = _operator(n=200, decay=0.95)
    kw = dict(tol=1e-5, max_iters=300, progress=False, dtype=torch.float64)
    sub = block_eigensolver(lambda v: v @ a, 200, 6, **kw)
    lob = lobpcg_eigensolver(lambda v: v @ a, 200, 6, **kw)
    assert sub.converged and lob.converged
    torch.testing.assert_close(lob.values, lam[:6], rtol=1e-8, atol=0)
    assert lob.hvp_count < sub.hvp_count / 2, (lob.hvp_count, sub.hvp_count)


def test_lobpcg_whole_space_and_init():
    """A block spanning the whole space is exact after one Rayleigh-Ritz step (the residual
    directions vanish and are dropped); a block seeded with the eigenvectors likewise."""
    a, lam, q = _operator(n=8)
    kw = dict(tol=1e-9, progress=False, dtype=torch.float64)
    res = lobpcg_eigensolver(lambda v: v @ a, 8, 6, oversample=2, **kw)
    assert res.converged and res.iterations == 1 and res.hvp_count == 8
    torch.testing.assert_close(res.values, lam[:6], rtol=1e-10, atol=0)
    a, lam, q = _operator()
    res = lobpcg_eigensolver(lambda v: v @ a, 60, 3, init=q[:, :7].t(), **kw)
    assert res.converged and res.iterations == 1 and res.hvp_count == 7


def test_lobpcg_float32_blocks_match_float64():
    """float32 storage of the blocks (float64 inner products): the same iterations and, down
    to ~1e-7 * lambda_1 / lambda_k (float32 rounding of the stored products; lambda_1 / lambda_5
    = 4 here), the same eigenpairs."""
    a, lam, q = _operator(n=300, decay=0.7)
    kw = dict(tol=1e-5, max_iters=200, progress=False, dtype=torch.float32)
    r64 = lobpcg_eigensolver(lambda v: v @ a.float(), 300, 5, **kw)
    r32 = lobpcg_eigensolver(lambda v: v @ a.float(), 300, 5, block_dtype=torch.float32, **kw)
    assert r64.converged and r32.converged
    assert abs(r32.iterations - r64.iterations) <= 1, (r32.iterations, r64.iterations)
    torch.testing.assert_close(r32.values, lam[:5], rtol=1e-5, atol=0)
    cos = (r32.vectors.double() @ q[:, :5]).abs().diagonal()
    assert float(cos.min()) > 1 - 1e-6
    true = (r32.vectors.double() @ a - r32.values[:, None] * r32.vectors.double()).norm(dim=1)
    torch.testing.assert_close(r32.residuals, true / r32.values, rtol=1e-2, atol=1e-6)
    with pytest.raises(ValueError, match="block_dtype"):
        lobpcg_eigensolver(lambda v: v @ a, 300, 5, block_dtype=torch.float16)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("block_dtype", [torch.float64, torch.float32])
def test_lobpcg_resumes_bit_for_bit(block_dtype):
    """A run stopped after any iteration and resumed from the state ``on_iteration`` saw ends
    exactly as the run never stopped: same vectors, values, products counted and history."""
    a, _, _ = _operator(n=200, decay=0.95)
    kw = dict(tol=1e-6, max_iters=300, progress=False, dtype=torch.float64, block_dtype=block_dtype)
    states = []
    whole = lobpcg_eigensolver(lambda v: v @ a, 200, 6, on_iteration=states.append, **kw)
    assert whole.converged and len(states) == whole.iterations >= 4  # the first products too
    for stop_at in (0, 1, 3):
        saved = []

        def save(state, saved=saved, stop_at=stop_at):
            saved.append(copy.deepcopy(state))  # what a checkpoint file holds
            if state["it"] == stop_at + 1:
                raise _Stop  # killed after this iteration's save

        with pytest.raises(_Stop):
            lobpcg_eigensolver(lambda v: v @ a, 200, 6, on_iteration=save, **kw)
        calls = []

        def hvp(v, calls=calls):
            calls.append(v.shape[0])
            return v @ a

        # a resumed run holds no more blocks than the first: the old P (the old W's storage
        # becomes the next P) is freed in the first iteration, not kept by the caller's dict
        state = copy.deepcopy(saved[-1])
        old_p = [weakref.ref(b) for b in state["rest"][1]] if len(state["rest"]) > 1 else []
        freed = []

        def check(_, freed=freed, old_p=old_p):
            freed.append(all(r() is None for r in old_p))

        again = lobpcg_eigensolver(hvp, 200, 6, state=state, on_iteration=check, **kw)
        assert freed and all(freed), freed
        assert torch.equal(again.vectors, whole.vectors) and torch.equal(again.values, whole.values)
        assert (again.iterations, again.hvp_count) == (whole.iterations, whole.hvp_count)
        assert again.history == whole.history
        assert sum(calls) == whole.hvp_count - saved[-1]["count"]  # only the products left
    bad = copy.deepcopy(states[0])
    with pytest.raises(ValueError, match=r"\[11, 200\] blocks \(k=7"):
        lobpcg_eigensolver(lambda v: v @ a, 200, 7, state=bad, **kw)
    with pytest.raises(ValueError, match="state must be a dict"):
        lobpcg_eigensolver(lambda v: v @ a, 200, 6, state={"x": bad["x"]}, **kw)


def test_power_solver_matches_paper_recipe_on_known_spectrum():
    a, lam, q = _operator()
    res = power_eigensolver(lambda v: v @ a, 60, 3, iterations=60, progress=False,
                            dtype=torch.float64)  # fmt: skip
    torch.testing.assert_close(res.values, lam[:3], rtol=1e-5, atol=0)
    gram = res.vectors @ res.vectors.t()
    torch.testing.assert_close(gram, torch.eye(3, dtype=torch.float64), atol=1e-9, rtol=0)
    assert res.hvp_count == 3 * (60 + 1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("solver", ["power", *BLOCK_SOLVERS])
def test_solvers_run_on_cuda(solver):
    """Every solver takes ``device="cuda"`` and hands the products CUDA vectors. (The first
    H200 run found the power solver projecting each new CPU start vector against the CUDA
    vectors already found, which failed from the second vector on.)"""
    a, lam, _ = _operator()
    a = a.cuda()

    def hvp(v):
        assert v.is_cuda
        return v @ a

    kw = dict(progress=False, dtype=torch.float64, device="cuda")
    if solver == "power":
        res = power_eigensolver(hvp, 60, 3, iterations=60, **kw)
    else:
        res = BLOCK_SOLVERS[solver](hvp, 60, 3, tol=1e-8, **kw)
    torch.testing.assert_close(res.values.cpu(), lam[:3], rtol=1e-5, atol=0)


@pytest.mark.parametrize("solver", list(BLOCK_SOLVERS))
def test_block_solvers_refuse_bad_products(solver):
    a, _, _ = _operator()
    kw = dict(progress=False, dtype=torch.float64)
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        BLOCK_SOLVERS[solver](lambda v: (v @ a) * float("nan"), 60, 3, **kw)
    with pytest.raises(ValueError, match=r"hvp must return \[7, 60\]"):
        BLOCK_SOLVERS[solver](lambda v: (v @ a)[:, :10], 60, 3, **kw)


def test_lobpcg_stops_when_it_diverges():
    """Products that are not those of one fixed operator (here the matrix grows 1e20-fold per
    call, a caricature of finite differences' drift) make LOBPCG's recombined products
    meaningless; once a residual is no longer finite it raises instead of returning garbage."""
    a, _, _ = _operator()
    calls = []

    def drifting(v):
        calls.append(1)
        return (v @ a) * 1e20 ** len(calls)

    with pytest.raises(FloatingPointError, match="LOBPCG diverged at iteration"):
        lobpcg_eigensolver(drifting, 60, 3, progress=False, dtype=torch.float64, tol=1e-12)
    assert 2 < len(calls) < 15  # stopped at the first non-finite residual, not at max_iters


def test_solvers_reject_bad_k():
    with pytest.raises(ValueError, match="k must be"):
        block_eigensolver(lambda v: v, 10, 11, progress=False)
    with pytest.raises(ValueError, match="k must be"):
        lobpcg_eigensolver(lambda v: v, 10, 0, progress=False)
    with pytest.raises(ValueError, match="k must be"):
        power_eigensolver(lambda v: v, 10, 0, progress=False)


@pytest.fixture(scope="module")
def small_generator():
    from python_tests.conftest import tiny_config

    torch.manual_seed(0)
    cfg = tiny_config(channel_map={4: 8, 8: 6, 16: 4})
    g = Generator(cfg).eval()
    g.update_w_avg(64)
    return g


@pytest.mark.usefixtures("native_path")
def test_discover_spectrum_matches_explicit_hessian(small_generator):
    g = small_generator
    k = 4
    ds = discover(g, "convs.1", method="spectrum", k=k, metric=PixelMSE(), n_latents=6, tol=1e-4,
                  max_iters=200, resize=None, calibrate=False, progress=False,
                  block_dtype="float64")  # fmt: skip
    # the same Hessian, explicitly: the same latents (seed 0) and metric
    hess = PerceptualHessian(g, "convs.1", g.sample(6, 0), PixelMSE(), resize=None)
    evals, evecs = torch.linalg.eigh(hess.explicit_hessian("gn").double())
    top = evals.flip(0)[:k]
    torch.testing.assert_close(ds.values, top, rtol=2e-3, atol=0)
    cos = (ds.coefficients.flatten(1).double() @ evecs.flip(1)[:, :k]).abs().diagonal()
    assert float(cos.min()) > 0.99
    assert ds.basis == "weight" and ds.method == "spectrum" and ds.metric == "pixel"
    assert ds.extra["converged"] and max(ds.extra["residuals"]) < 1e-4
    assert ds.hparams["solver"] == "lobpcg" and ds.hparams["hvp"] == "gn"
    assert ds.hparams["batch_size"] == 8  # the default for exact GN products
    # float32 blocks (the default at this tolerance): the same eigenpairs (float32 products
    # either way)
    ds32 = discover(g, "convs.1", method="spectrum", k=k, metric=PixelMSE(), n_latents=6,
                    tol=1e-4, max_iters=200, resize=None, calibrate=False,
                    progress=False)  # fmt: skip
    assert ds32.extra["converged"] and ds32.hparams["block_dtype"] == "float32"
    torch.testing.assert_close(ds32.values, ds.values, rtol=1e-5, atol=0)
    cos = (ds32.coefficients.flatten(1) @ ds.coefficients.flatten(1).t()).abs().diagonal()
    assert float(cos.min()) > 1 - 1e-5


def test_power_fd_agrees_with_block_gn(small_generator):
    """The paper's solver (deflated power iteration, central differences) and the default one
    (block LOBPCG, exact Gauss-Newton products) find the same top eigenpairs.

    In float64 with eps=1e-3. With the paper's eps=0.1 the FD eigenvalue is ~2 % low on this
    layer, and still ~1.7 % at 0.01: the leaky-ReLU kinks make the FD bias O(eps), not O(eps^2)."""
    g = copy.deepcopy(small_generator).double()
    kw = dict(method="spectrum", k=2, metric=PixelMSE().double(), n_latents=4, resize=None,
              calibrate=False, progress=False)  # fmt: skip
    block = discover(g, "convs.1", tol=1e-6, max_iters=300, **kw)
    power = discover(g, "convs.1", solver="power", hvp="fd", iterations=60, eps=1e-3, **kw)
    torch.testing.assert_close(power.values, block.values, rtol=1e-3, atol=0)
    cos = (power.coefficients.flatten(1) @ block.coefficients.flatten(1).t()).abs().diagonal()
    assert float(cos.min()) > 0.999
    assert (block.hparams["batch_size"], power.hparams["batch_size"]) == (8, 32)  # GN, FD
    # FD products without a solver named run subspace iteration (LOBPCG needs exact ones)
    fd = discover(g, "convs.1", hvp="fd", eps=1e-3, tol=1e-5, max_iters=300, **kw)
    assert fd.hparams["solver"] == "block" and fd.extra["converged"]
    torch.testing.assert_close(fd.values, block.values, rtol=1e-3, atol=0)


def test_spectrum_bad_arguments(small_generator):
    with pytest.raises(ValueError, match="solver"):
        discover(small_generator, "convs.1", method="spectrum", solver="lanczos", k=2)
    with pytest.raises(ValueError, match="hvp"):
        discover(small_generator, "convs.1", method="spectrum", hvp="exact", k=2)
    with pytest.raises(ValueError, match="solver='lobpcg' needs exact products"):
        discover(small_generator, "convs.1", method="spectrum", solver="lobpcg", hvp="fd", k=2)
    with pytest.raises(ValueError, match="n_latents"):
        discover(small_generator, "convs.1", method="spectrum", n_latents=0, k=2)
    for bad in ({"max_iters": 0}, {"iterations": -1}, {"max_iters": 2.5}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be an integer >= 1"):
            discover(small_generator, "convs.1", method="spectrum", k=2, **bad)
    with pytest.raises(ValueError, match="metric must be 'auto', 'lpips-vgg'.*got 'inception'"):
        discover(small_generator, "convs.1", method="spectrum", metric="inception", k=2)
    tight = discover(small_generator, "convs.1", method="spectrum", k=2, n_latents=2, tol=1e-5,
                     max_iters=1, metric=PixelMSE(), resize=None, calibrate=False,
                     progress=False)  # fmt: skip
    assert tight.hparams["block_dtype"] == "float64"  # auto: float64 below tol 1e-4
    # tol by product: 1e-3 exact, 3e-2 for finite differences (their error floor is ~1e-2)
    quick = dict(method="spectrum", k=2, n_latents=2, max_iters=1, metric=PixelMSE(),
                 resize=None, calibrate=False, progress=False)  # fmt: skip
    assert discover(small_generator, "convs.1", **quick).hparams["tol"] == 1e-3
    fd = discover(small_generator, "convs.1", hvp="fd", **quick).hparams
    assert (fd["tol"], fd["solver"]) == (3e-2, "block")
    with pytest.raises(ValueError, match="block_dtype must be"):
        discover(small_generator, "convs.1", method="spectrum", block_dtype="float16", k=2)
    with pytest.raises(ValueError, match="applies to solver='lobpcg' only"):
        discover(small_generator, "convs.1", method="spectrum", solver="block",
                 block_dtype="float32", k=2)  # fmt: skip

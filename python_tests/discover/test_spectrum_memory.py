"""The spectrum under a memory budget: the same eigenpairs when the Hessian streams its latents,
the memory model and expected time printed up front, and budgets too small refused with the
figures (API and CLI)."""

from __future__ import annotations

import pytest
import torch

from navcuda.cli import main
from navcuda.discover import discover
from navcuda.hessian import PerceptualHessian
from navcuda.memory_budget import MemoryBudgetError
from navcuda.metrics.perceptual import PixelMSE

KW = dict(k=3, metric=PixelMSE(), n_latents=10, tol=1e-4, max_iters=200, resize=None,
          calibrate=False, batch_size=4)  # fmt: skip


def test_streamed_spectrum_equals_cached(tiny_generator, capsys):
    g = tiny_generator
    full = discover(g, "convs.1", method="spectrum", progress=False, memory_budget=None, **KW)
    assert full.hparams["memory_budget"] is None
    assert full.extra["hessian"]["memory"]["resident"] == 10
    # a budget that leaves the Hessian room for 5 of the 10 latents' caches
    probe = PerceptualHessian(g, "convs.1", g.sample(10, 0), PixelMSE(), batch_size=4,
                              resize=None, memory_budget="1TB")  # fmt: skip
    m = probe.memory
    n = probe.n_params
    solver = 6 * 7 * n * 4  # LOBPCG: 6 float32 blocks of [k + 4, N]
    budget = solver + m.per_chunk + m.chunk_vectors * m.per_vector // 2 + 5 * m.per_latent + 8
    ds = discover(g, "convs.1", method="spectrum", progress=True, memory_budget=budget, **KW)
    mem = ds.extra["hessian"]["memory"]
    assert (mem["resident"], mem["window"]) == (1, 2)  # room 5: blocks of 2, one cached
    torch.testing.assert_close(ds.values, full.values, rtol=1e-5, atol=0)
    torch.testing.assert_close(
        torch.tensor(ds.extra["residuals"]),
        torch.tensor(full.extra["residuals"]),
        rtol=0.5,
        atol=1e-6,
    )
    cos = (ds.coefficients.flatten(1) @ full.coefficients.flatten(1).t()).abs().diagonal()
    assert float(cos.min()) > 1 - 1e-5
    err = capsys.readouterr().err
    assert "spectrum: memory model" in err and "1 of 10 latents cached" in err
    assert "6 blocks of [7, " in err and "spectrum: expected time ~" in err


def test_budget_too_small_is_refused(tiny_generator, tmp_path, capsys):
    g = tiny_generator
    with pytest.raises(MemoryBudgetError, match="eigensolver's blocks on the host alone take"):
        discover(g, "convs.1", method="spectrum", progress=False, memory_budget="10kB", **KW)
    out = tmp_path / "s.nav"
    args = ["discover", "--method", "spectrum", "-k", "2", "--param", "n_latents=4", "-o", str(out)]
    assert main([*args, "--memory-budget", "1kB"]) == 2
    err = capsys.readouterr().err
    assert "memory budget 1 kB is too small" in err and "Traceback" not in err
    assert main([*args, "--memory-budget", "lots"]) == 2
    assert "memory_budget" in capsys.readouterr().err


def test_spectrum_checkpoint_resumes_the_same_run(tiny_generator, tmp_path, capsys):
    """A run cut short (here by ``max_iters``) and resumed from its checkpoint ends exactly as
    the run never cut; a checkpoint of another run, a damaged one and a solver without
    checkpoints are refused with named errors."""
    g, ckpt = tiny_generator, tmp_path / "spectrum.state"
    whole = discover(g, "convs.1", method="spectrum", progress=False, **KW)
    assert whole.extra["iterations"] > 3
    cut = discover(g, "convs.1", method="spectrum", progress=False, checkpoint=ckpt,
                   **{**KW, "max_iters": 3})  # fmt: skip
    assert not cut.extra["converged"] and ckpt.is_file()
    resumed = discover(g, "convs.1", method="spectrum", progress=True, checkpoint=ckpt, **KW)
    err = capsys.readouterr().err
    assert "at iteration 3" in err and f"solver state kept in {ckpt}" in err
    assert f"products left ({cut.extra['hvp_count']} done)" in err  # the estimate knows it
    assert torch.equal(resumed.coefficients, whole.coefficients)
    assert torch.equal(resumed.values, whole.values)
    for key in ("iterations", "hvp_count", "residuals", "residual_history", "converged"):
        assert resumed.extra[key] == whole.extra[key], key
    with pytest.raises(ValueError, match=r"another run \(n_latents 10 there, 12 here\)"):
        discover(g, "convs.1", method="spectrum", progress=False, checkpoint=ckpt,
                 **{**KW, "n_latents": 12})  # fmt: skip
    with pytest.raises(ValueError, match="checkpoint applies to solver='lobpcg' only"):
        discover(g, "convs.1", method="spectrum", progress=False, checkpoint=ckpt,
                 **{**KW, "solver": "block"})  # fmt: skip
    saved = torch.load(ckpt, weights_only=True)
    saved["state"]["x"][0, 0] += 1.0  # a changed number under the old checksum
    torch.save(saved, ckpt)
    with pytest.raises(ValueError, match="damaged"):
        discover(g, "convs.1", method="spectrum", progress=False, checkpoint=ckpt, **KW)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read spectrum checkpoint"):
        discover(g, "convs.1", method="spectrum", progress=False, checkpoint=ckpt, **KW)


def test_spectrum_checkpoint_from_the_cli(tmp_path):
    ckpt, out = tmp_path / "s.state", tmp_path / "s.nav"
    args = ["discover", "--method", "spectrum", "-k", "2", "--param", "n_latents=4", "--param",
            "max_iters=2", "--param", f"checkpoint={ckpt}", "-o", str(out)]  # fmt: skip
    assert main(args) == 0
    saved = torch.load(ckpt, weights_only=True)
    assert saved["k"] == 2 and saved["n_latents"] == 4 and saved["state"]["it"] == 2


def test_expected_time_stops_at_max_iters(tiny_generator):
    """The expected products are the usual 5-9 per block vector, or max_iters blocks when fewer."""
    from navcuda.discover import spectrum_memory as SM

    g = tiny_generator
    probe = PerceptualHessian(g, "convs.1", g.sample(4, 0), PixelMSE(), batch_size=4,
                              resize=None, memory_budget="1TB")  # fmt: skip
    kw = dict(solver="lobpcg", k=3, p=7, n=probe.n_params, block_dtype=torch.float32,
              device=torch.device("cpu"), budget=None, iterations=20)  # fmt: skip
    last = SM.report(probe.memory, max_iters=1, **kw).splitlines()[-1]
    assert "~7 products (max_iters=1)" in last and "at most" in last
    last = SM.report(probe.memory, max_iters=50, **kw).splitlines()[-1]
    lo, hi = SM.PRODUCTS_PER_VECTOR
    assert f"~{lo * 7}-{hi * 7} products (~{lo}-{hi} per block vector" in last
    assert "(350 products)" in last
    last = SM.report(probe.memory, max_iters=50, done=21, **kw).splitlines()[-1]
    assert f"~{lo * 7 - 21}-{hi * 7 - 21} products left (21 done)" in last
    assert "(329 products)" in last
    last = SM.report(probe.memory, max_iters=8, **kw).splitlines()[-1]
    assert f"~{lo * 7}-56 products (max_iters=8)" in last  # the range's top capped
    last = SM.report(probe.memory, max_iters=50, done=70, **kw).splitlines()[-1]
    assert "~7 products left (70 done)" in last  # past the usual count: one block at least
    last = SM.report(probe.memory, max_iters=50, done=343, **kw).splitlines()[-1]
    assert "~7 products left (343 done) (max_iters=50)" in last  # the cap, not the usual count

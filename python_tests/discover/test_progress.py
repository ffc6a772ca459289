"""Every phase longer than a moment says what it does (issue 22, item 11): the Hessian's
precomputation, the block solvers (residual trend, no ETA against ``max_iters``) and their
products, the calibration after a spectrum run, the hybrid method's basis (calibration alone:
test_calibrate.py) and the wheel build's configure and compile steps."""

from __future__ import annotations

import re

import pytest
import torch

from navcuda.discover import discover
from navcuda.discover.eigensolvers import block_eigensolver, lobpcg_eigensolver
from navcuda.metrics.perceptual import PixelMSE

pytestmark = pytest.mark.usefixtures("one_thread")

_SPEC = dict(metric=PixelMSE(), n_latents=3, resize=None, max_iters=30, tol=1e-3)


def _last_postfix(err: str) -> str:
    return [line for line in re.split(r"[\r\n]", err) if line.strip()][-1]


@pytest.mark.parametrize("solve", [lobpcg_eigensolver, block_eigensolver])
def test_block_solver_bar_shows_residual_trend_not_an_eta_against_max_iters(solve, capsys):
    g = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))[0]
    a = (q * 0.7 ** torch.arange(40, dtype=torch.float64)) @ q.t()
    res = solve(lambda v: v @ a, 40, 3, tol=1e-6, max_iters=500, progress=True,
                dtype=torch.float64)  # fmt: skip
    assert res.converged and res.iterations < 500
    err = capsys.readouterr().err
    assert "first block of products" in err  # shown before the first (costly) products
    assert "/500" not in err and "<" not in err.split("(<= 500 iters)")[1]  # no total, no ETA
    last = _last_postfix(err)
    assert "max_residual=" in last and "tol=1e-06" in last and "trend=x0." in last, last


def test_residual_trend_leaves_out_the_random_start():
    """The 512-channel run's first residuals (RESULTS.md): the fall from the random start
    would promise ~2 more iterations; the rate after it (x0.40) says 6."""
    from navcuda.discover.eigensolvers import _residual_trend

    out = _residual_trend([158.0, 0.613, 0.243], 1e-3, 2, 0.0182)
    assert (out["trend"], out["to_tol"], out["locked"]) == ("x0.40/iter", "~6 iters", "2"), out
    out = _residual_trend([158.0, 0.613], 1e-3, 0, 0.0182)  # nothing else to go by yet
    assert out["trend"] == "x0.00/iter" and out["to_tol"] == "~2 iters", out
    out = _residual_trend([158.0, 0.613, 0.7], 1e-3, 0, 0.0182)  # rising: no promise
    assert out["to_tol"] == "?", out


def test_residual_trend_says_how_long_the_iterations_left_take():
    """The 512-channel run's hour-long blocks: the iterations left at the run's own pace."""
    from navcuda.discover.eigensolvers import _Pace, _residual_trend

    out = _residual_trend([158.0, 0.613, 0.243], 1e-3, 2, 0.0182, per_iter=3300.0)
    assert out["to_tol"] == "~6 iters (~5:30:00)", out
    pace = _Pace(done=160)  # a resumed run: 160 products before this process
    assert pace.per_iter(78, 160) is None  # no product run yet here
    pace.start -= 3280.0  # 80 products in 3280 s: 41 s each
    assert 78 * 41.0 <= pace.per_iter(78, 240) < 78 * 41.1


def test_spectrum_shows_its_setup_and_calibration(tiny_generator, capsys):
    discover(tiny_generator, "convs.3", method="spectrum", k=2, progress=True, **_SPEC)
    err = capsys.readouterr().err
    setup = err.find("hessian setup: activations of 3 latents")
    solver = err.find("lobpcg")
    products = err.rfind("hvp_gn[")  # a bar within each block of products (they can take hours)
    calib = err.find("calibrate 2 amplitudes")
    assert 0 <= setup < solver < products < calib, err[-2000:]
    discover(tiny_generator, "convs.3", method="spectrum", k=2, progress=False, **_SPEC)
    assert capsys.readouterr().err == ""


def test_hybrid_says_it_builds_its_basis(tiny_generator, capsys):
    opt = dict(k=2, steps=1, reconstructor_size=32, batch_size=2, calibrate=False)
    discover(tiny_generator, "convs.3", method="hybrid", basis_size=2, spectrum_params=_SPEC,
             progress=True, **opt)  # fmt: skip
    err = capsys.readouterr().err
    status = err.find("hybrid: building the spectrum basis (the top 2 Hessian eigenvectors")
    assert 0 <= status < err.find("hessian setup"), err[:2000]


def test_wheel_build_says_what_it_runs():
    """The wheel build's configure and compile phases (minutes on 2 cores) print their commands
    as they start (`pip install -v .`): scikit-build-core logs them at INFO."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    skbuild = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["scikit-build"]
    assert skbuild.get("logging", {}).get("level") in ("INFO", "DEBUG")

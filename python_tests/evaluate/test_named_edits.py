"""The bundled named set is clean at the README's example strength (issue 25).

Every shipped named direction, at ``t = +-EXAMPLE_T`` (``navcuda edit --direction NAME --t 2``),
must move its factor by at least 0.1 of its range, every other factor by at most a third of
that, and raise toy-FD by at most 0.5 (:mod:`navcuda.evaluate.named_edits`). A set built by
``navcuda name --fit`` is measured on 256 latents drawn with seed 0;
this test re-measures the shipped file on 96 *other* latents (seed 1).

Tolerances: with 96 latents a factor's mean change carries a standard error (``change_se``,
measured per factor), so a bound fails only when it is missed by more than two standard errors
(one-sided, ~2 % chance per bound for an edit exactly at the bound; the shipped edits were
built with margin). Toy-FD on 48 images is biased and noisy; the increase is measured against
the same 48 unedited latents, and :data:`FD_TOLERANCE` is the spread measured between seeds.
"""

from __future__ import annotations

import math

import pytest
import torch

from navcuda.evaluate.named_edits import (
    MAX_CROSSTALK,
    MAX_FD_INCREASE,
    MIN_CHANGE,
    EditProbe,
    check_named_set,
)
from navcuda.toyworld import FACTOR_NAMES

EXAMPLE_T = 2.0
N_SAMPLES = 96
#: Toy-FD increases on ~100 latents scatter by about this much: at 128 latents, edits whose
#: increase on 256 latents is ~0 measured between -0.35 and +0.3 (issue 25's measurements).
FD_TOLERANCE = 0.3


def _lenient_failures(c) -> list[str]:
    """The check's bounds, each given two standard errors of slack (module docstring)."""
    k = FACTOR_NAMES.index(c.factor)
    se = c.change_se
    signed = c.target_change * math.copysign(1.0, c.t)
    out = []
    if signed + 2 * float(se[k]) < MIN_CHANGE:
        out.append(f"{c.factor} moves {signed:+.3f} +- {float(se[k]):.3f}")
    allowed = MAX_CROSSTALK * (abs(c.target_change) + 2 * float(se[k]))
    for j, name in enumerate(FACTOR_NAMES):
        if j != k and abs(float(c.change[j])) - 2 * float(se[j]) > allowed:
            out.append(f"{name} moves {float(c.change[j]):+.3f} (> {allowed:.3f})")
    if c.fd_increase > MAX_FD_INCREASE + FD_TOLERANCE:
        out.append(f"toy-FD +{c.fd_increase:.2f}")
    return out


@pytest.fixture(scope="module")
def probe():
    import navcuda

    torch.manual_seed(0)
    return EditProbe(navcuda.load_default(), N_SAMPLES, seed=1, realism_samples=512)


def test_every_shipped_named_direction_is_clean_at_the_example_strength(probe):
    from navcuda.models.default import load_default_directions

    ds = load_default_directions()
    assert len(ds) >= 6  # the build keeps 12 of the 14 factors
    bad = {}
    for c in check_named_set(probe, ds, (-EXAMPLE_T, EXAMPLE_T)):
        fails = _lenient_failures(c)
        if fails:
            bad[f"{c.name} t={c.t:+g}"] = fails
    assert not bad, bad


def test_the_check_rejects_the_same_directions_pushed_too_far(probe):
    """Not vacuous: at 5x the example strength (beyond the clean range measured at build time)
    the same check fails every shipped direction on at least one side."""
    from navcuda.models.default import load_default_directions

    ds = load_default_directions()
    for d in ds:
        one = ds.subset([ds.names.index(d.name)])
        checks = check_named_set(probe, one, (-5 * EXAMPLE_T, 5 * EXAMPLE_T))
        assert any(_lenient_failures(c) for c in checks), d.name


def test_the_tool_checks_a_set_of_another_checkpoint(tmp_path, capsys, tiny_config):
    """``python -m navcuda.evaluate.named_edits check SET --checkpoint FILE`` measures the set on
    that generator (a candidate model, before it is bundled), not on the bundled one."""
    from navcuda.discover import discover
    from navcuda.evaluate.named_edits import _main
    from navcuda.models.checkpoints import save_generator
    from navcuda.models.stylegan2 import Generator

    torch.manual_seed(0)
    g = Generator(tiny_config(resolution=32)).eval()
    save_generator(g, tmp_path / "g.safetensors")
    ds = discover(g, "convs.1", "svd", k=1)
    ds.names = ["eye size"]
    ds.save(tmp_path / "set.nav")
    argv = ["check", str(tmp_path / "set.nav"), "--checkpoint", str(tmp_path / "g.safetensors")]
    code = _main([*argv, "--n-samples", "4", "--realism-samples", "8"])
    out = capsys.readouterr().out
    assert code in (0, 1)
    assert out.count("eye size ") == 2 and "of 2 checks pass (n = 4)" in out


class _KnownProbe:
    """A stand-in for :class:`EditProbe` whose factor changes are a known function of the shift
    ``x`` (its coordinates in a 6-vector basis): ``A x + x^3 B`` (odd, the part a direction
    controls) ``+ C x^2`` (even)."""

    def __init__(self, n_factors: int, k: int = 6, cubic: float = 0.0, even: float = 0.0):
        g = torch.Generator().manual_seed(0)
        self.A = torch.randn(n_factors, k, generator=g, dtype=torch.float64)
        self.B = cubic * torch.randn(n_factors, k, generator=g, dtype=torch.float64)
        self.C = even * torch.randn(n_factors, k, generator=g, dtype=torch.float64)

    def check(self, d, t, factor=None, amplitude=None):
        from types import SimpleNamespace

        c = d.coefficients.double()
        x = c / c.norm() * t * float(d.amplitude if amplitude is None else amplitude)
        return SimpleNamespace(change=self.A @ x + self.B @ x**3 + self.C @ x**2)


def test_the_jacobian_is_the_change_per_unit_shift():
    from navcuda.evaluate.named_edits import factor_jacobian

    probe = _KnownProbe(len(FACTOR_NAMES))
    basis = torch.eye(6, dtype=torch.float64)
    jac = factor_jacobian(probe, "convs.3", "svd", basis, [0.01] * 6)
    torch.testing.assert_close(jac, probe.A, rtol=1e-9, atol=1e-12)  # central difference of a line


def test_the_fit_moves_its_factor_alone_and_refining_removes_the_odd_nonlinearity():
    """14 factors from 6 vectors cannot all be separated: a factor the span moves alone is one
    the fit must find. With a cubic term the first-order solution leaks into other factors; the
    Newton steps on the measured odd part remove that leak (to the solver's precision)."""
    from navcuda.evaluate.named_edits import fit_factor_shift

    n = 4  # a square-enough system: 4 factors, 6 vectors (others: none)
    probe = _KnownProbe(n, cubic=0.3, even=0.2)
    basis = torch.eye(6, dtype=torch.float64)

    def odd_change(shift):
        x = shift.double()
        return probe.A @ x + probe.B @ x**3

    first = fit_factor_shift(probe, probe.A, basis, "convs.3", "svd", 1, 0.14, refine=0)
    refined = fit_factor_shift(probe, probe.A, basis, "convs.3", "svd", 1, 0.14, refine=6)
    target = torch.zeros(n, dtype=torch.float64)
    target[1] = 0.14
    leak_first = (odd_change(first) - target).abs().max()
    leak_refined = (odd_change(refined) - target).abs().max()
    assert leak_first > 1e-4  # the cubic term shows at this strength
    assert leak_refined < 1e-3 * leak_first
    # the first-order solution is the least-norm one: orthogonal to A's null space
    null = torch.linalg.svd(probe.A).Vh[n:]
    assert float((null @ first).abs().max()) < 1e-10


def test_the_builder_fits_named_directions_of_the_bundled_model(tmp_path):
    """End to end on a small budget (two factors, few latents; ~15 s): what it keeps is named
    after a requested factor, oriented (positive t raises it), in the SVD basis, and its
    amplitude is the clean shift over the example strength; re-checked on other latents, it
    passes at +-t. The whole singular basis is needed: in the span of the top 16 directions
    neither factor has a clean combination (measured)."""
    import navcuda
    from navcuda.discover import discover
    from navcuda.evaluate.named_edits import build_clean_named_set

    g = navcuda.load_default()
    cands = discover(g, "convs.3", "svd", k=64)
    kw = {"n_samples": 48, "jacobian_samples": 32, "realism_samples": 64, "progress": False}
    ds, report = build_clean_named_set(g, [cands], factors=["nose length", "eye size"], **kw)
    assert set(report["factors"]) == {"nose_length", "eye_size"}
    assert ds.basis == "svd" and ds.method == "svd+fit" and len(ds) >= 1
    assert set(ds.names) <= {"nose length", "eye size"}
    for d, c in zip(ds, ds.extra["clean_checks"], strict=True):
        assert d.amplitude == pytest.approx(c["shift"] / 2.0)
        assert c["plus"]["target_change"] > 0 > c["minus"]["target_change"]
    other = EditProbe(g, 64, seed=1, realism_samples=64)
    assert not [_lenient_failures(c) for c in check_named_set(other, ds, (-2.0, 2.0))
                if _lenient_failures(c)]  # fmt: skip
    with pytest.raises(ValueError, match="share one layer"):
        build_clean_named_set(g, [cands, discover(g, "convs.1", "svd", k=2)], **kw)
    with pytest.raises(ValueError, match="change must lie"):
        build_clean_named_set(g, [cands], change=1.5, **kw)
    uncalibrated = cands.subset(range(4))
    uncalibrated.amplitudes = torch.full((4,), float("nan"), dtype=torch.float64)
    with pytest.raises(ValueError, match="needs a recommended amplitude"):
        build_clean_named_set(g, [uncalibrated], **kw)
    with pytest.raises(ValueError, match="not a toy-world factor"):
        build_clean_named_set(g, [cands], factors=["nose size"], **kw)

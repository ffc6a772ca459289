"""The bundled named set is clean at the README's example strength (issue 25).

Every shipped named direction, at ``t = +-EXAMPLE_T`` (``navcuda edit --direction NAME --t 2``),
must move its factor by at least 0.1 of its range, every other factor by at most a third of
that, and raise toy-FD by at most 0.5 (:mod:`navcuda.evaluate.named_edits`). A set built by
``python -m navcuda.evaluate.named_edits build`` is measured on 256 latents drawn with seed 0;
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


@pytest.mark.xfail(
    strict=True,
    reason="issue 25: the shipped set (8 SVD directions of convs.3 at RMS-calibrated amplitudes) "
    "fails at t = +-2 for every direction; of 80 convs.3 candidates (SVD top-64, spectrum "
    "top-16) only 'nose length' passes at both signs (python -m navcuda.evaluate.named_edits "
    "build). The set is kept (one direction would leave the demo and edit with one edit): the "
    "singular values of the bundled model's layers are nearly flat: its kernels are still ~85-90 % "
    "their random initialisation by energy. A retrain with --kernel-init 0.15 halves that "
    "(toy-FD 1.74) but its named-set build also keeps only 'nose length': the generator renders "
    "factors jointly per layer (eye size with mouth width), which no choice of directions undoes",
)
def test_every_shipped_named_direction_is_clean_at_the_example_strength(probe):
    from navcuda.models.default import load_default_directions

    ds = load_default_directions()
    assert len(ds) >= 1
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

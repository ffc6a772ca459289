"""Several directions at once (:class:`navcuda.shift.Combination`): the composed render equals the
generator whose weights (and latent) were shifted by hand."""

from __future__ import annotations

import copy

import pytest
import torch

from navcuda.models.interface import LayerShift
from navcuda.ops.shifted_modconv import SVDShift
from navcuda.shift import (
    Combination,
    Direction,
    Term,
    combined_shift,
    generate,
    layer_space,
    synthesize_shifted,
)

LAYER = "convs.1"


def _z(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 32, generator=torch.Generator().manual_seed(seed))


def _hand_shifted(g, layer: str, delta: torch.Tensor):
    """A copy of ``g`` whose kernel of ``layer`` is ``W + delta`` (the oracle)."""
    g2 = copy.deepcopy(g)
    with torch.no_grad():
        g2.kernel(layer).add_(delta.to(g2.kernel(layer).dtype))
    return g2


def _sv(g, layer: str, i: int) -> Direction:
    return Direction.singular(layer, i, layer_space(g, layer).rank)


def _delta64(g, d: Direction) -> torch.Tensor:
    return d.delta(g, torch.float64)


@torch.no_grad()
def test_two_rank_one_shifts_equal_the_summed_weight(tiny_generator):
    g = tiny_generator
    d1, d2 = _sv(g, LAYER, 0), _sv(g, LAYER, 3)
    t1, t2 = 1.7, -2.3
    x = g.from_z(_z(3))
    got = synthesize_shifted(g, x, Combination([(d1, t1), (d2, t2)]))
    oracle = _hand_shifted(g, LAYER, t1 * _delta64(g, d1) + t2 * _delta64(g, d2))
    want = oracle.render(x)
    assert (got - want).abs().max() <= 1e-5
    assert (got - g.render(x)).abs().max() > 1e-2  # the edit does something


@torch.no_grad()
def test_per_sample_singular_sums_take_the_factorised_path(tiny_generator):
    g = tiny_generator
    d1, d2 = _sv(g, LAYER, 0), _sv(g, LAYER, 5)
    t1 = torch.tensor([1.5, -1.0, 0.5])
    t2 = torch.tensor([0.5, 2.0, -1.5])
    combo = Combination([(d1, t1), (d2, t2)])
    shifts, offset = combined_shift(g, combo, 3)
    assert offset is None and len(shifts) == 1
    assert isinstance(shifts[0].spec, SVDShift)  # no per-sample kernel materialised
    x = g.from_z(_z(3, seed=1))
    got = synthesize_shifted(g, x, combo)
    for b in range(3):
        delta = float(t1[b]) * _delta64(g, d1) + float(t2[b]) * _delta64(g, d2)
        want = _hand_shifted(g, LAYER, delta).render(x.take([b]))
        assert (got[b : b + 1] - want).abs().max() <= 1e-5, b


@torch.no_grad()
def test_per_sample_zero_row_and_mixed_bases(tiny_generator):
    g = tiny_generator
    d1 = _sv(g, LAYER, 1)
    w = torch.randn(g.layer(LAYER).weight_shape, generator=torch.Generator().manual_seed(3))
    d2 = Direction(LAYER, "weight", w)
    t1 = torch.tensor([0.0, 1.0])
    t2 = torch.tensor([0.0, -0.8])
    x = g.from_z(_z(2, seed=2))
    # Singular directions only, one sample unshifted: a zero coefficient row is never normalised.
    got = synthesize_shifted(g, x, Combination([(d1, t1), (_sv(g, LAYER, 2), t2)]))
    assert torch.isfinite(got).all()
    assert (got[:1] - g.render(x.take([0]))).abs().max() <= 1e-5
    # Singular + weight basis, per sample: materialised, still the sum.
    got = synthesize_shifted(g, x, Combination([(d1, t1), (d2, t2)]))
    for b in range(2):
        delta = float(t1[b]) * _delta64(g, d1) + float(t2[b]) * _delta64(g, d2)
        want = _hand_shifted(g, LAYER, delta).render(x.take([b]))
        assert (got[b : b + 1] - want).abs().max() <= 1e-5


@torch.no_grad()
def test_weight_and_latent_directions_together_equal_both_by_hand(tiny_generator):
    g = tiny_generator
    v = torch.randn(32, generator=torch.Generator().manual_seed(4))
    lat = Direction("w", "latent", v)
    d1, d2 = _sv(g, LAYER, 0), _sv(g, "convs.3", 2)
    ts = torch.tensor([1.0, -2.0])
    combo = Combination([(d1, 1.2), (lat, ts), (d2, -0.7)])
    x = g.from_z(_z(2, seed=5))
    got = generate(g, x, combo)
    # By hand: the latent moved, both layers shifted with their own LayerShift.
    ws = x["ws"] + ts[:, None] * lat.latent_shift(g)
    shifts = [
        LayerShift(LAYER, 1.2 * d1.delta(g)),
        LayerShift("convs.3", -0.7 * d2.delta(g)),
    ]
    want = g.render(x.replace(ws=ws), shifts)
    assert torch.equal(got, want)


@torch.no_grad()
def test_one_term_is_the_single_direction_render(tiny_generator):
    g = tiny_generator
    d = _sv(g, LAYER, 4)
    x = g.from_z(_z(3, seed=6))
    assert torch.equal(
        synthesize_shifted(g, x, Combination([(d, 1.3)])), synthesize_shifted(g, x, d, 1.3)
    )
    ts = torch.tensor([-1.0, 0.0, 2.0])
    assert torch.equal(
        synthesize_shifted(g, x, Combination([Term(d, ts)])), synthesize_shifted(g, x, d, ts)
    )
    # scaled() multiplies every t.
    assert torch.equal(
        synthesize_shifted(g, x, Combination([(d, 1.0)]).scaled(ts)),
        synthesize_shifted(g, x, d, ts),
    )


def test_gradient_reaches_every_t(tiny_generator):
    g = tiny_generator
    t1 = torch.tensor([0.5, 1.0], requires_grad=True)
    t2 = torch.tensor([1.0, -0.5], requires_grad=True)
    combo = Combination([(_sv(g, LAYER, 0), t1), (_sv(g, LAYER, 1), t2)])
    generate(g, g.from_z(_z(2, seed=7)), combo).square().sum().backward()
    assert t1.grad is not None and t2.grad is not None
    assert torch.isfinite(t1.grad).all() and t1.grad.abs().sum() > 0


def test_bad_combinations_are_refused(tiny_generator):
    g = tiny_generator
    d = _sv(g, LAYER, 0)
    x = g.from_z(_z(2))
    with pytest.raises(ValueError, match="at least one"):
        Combination([])
    with pytest.raises(TypeError, match="Direction"):
        Combination([("eye size", 1.0)])
    with pytest.raises(ValueError, match="3 values for a batch of 2"):
        synthesize_shifted(g, x, Combination([(d, torch.ones(3))]))
    with pytest.raises(ValueError, match="carries each direction's t"):
        synthesize_shifted(g, x, Combination([(d, 1.0)]), t=2.0)
    with pytest.raises(ValueError, match="finite"):
        synthesize_shifted(g, x, Combination([(d, float("nan"))]))
    assert "sv0: 1" in repr(Combination([(d, 1.0)]))


@torch.no_grad()
def test_combinations_mixed_per_sample_and_rendered_as_strips(tiny_generator):
    from navcuda.rendering import render

    g = tiny_generator
    d1, d2, d3 = _sv(g, LAYER, 0), _sv(g, LAYER, 2), _sv(g, "convs.3", 1)
    combo = Combination([(d1, 1.5), (d3, -1.0)], name="both")
    x = g.from_z(_z(3, seed=8))
    ts = torch.tensor([1.0, -2.0, 0.5])
    got = synthesize_shifted(g, x, [combo, d2, combo], ts)
    for b, want in enumerate(
        [
            synthesize_shifted(g, x.take([0]), combo),
            synthesize_shifted(g, x.take([1]), d2, -2.0),
            synthesize_shifted(g, x.take([2]), combo.scaled(0.5)),
        ]
    ):
        assert (got[b : b + 1] - want).abs().max() <= 1e-5, b
    res = render(g, [combo, d2], x, ts=[0.0, 1.0], relative=False, progress=False)
    assert res.names == ["both", "sv2"] and res.images.shape[:3] == (2, 3, 2)
    assert (res.images[0, :, 1] - synthesize_shifted(g, x, combo)).abs().max() <= 1e-5
    assert torch.equal(res.images[0, :, 0], res.images[1, :, 0])  # t = 0: both unshifted

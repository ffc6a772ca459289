"""LayerSpace, Direction and rendering with shifted weights (the functional edit)."""

from __future__ import annotations

import copy

import pytest
import torch

from navcuda.models.layers import layer_weight
from navcuda.models.stylegan2 import LayerShift
from navcuda.shift import (
    Direction,
    LayerSpace,
    flatten_kernel,
    generate,
    layer_space,
    shift_deltas,
    unflatten_kernel,
)


def _z(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 32, generator=torch.Generator().manual_seed(seed))


def test_flatten_layout_matches_official_permutation():
    w = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    m = flatten_kernel(w)
    assert m.shape == (3 * 3 * 4, 5)
    # Row index = (ky * kw + kx) * in + i, column = out channel (permute (kh, kw, in, out)).
    assert m[(1 * 3 + 2) * 4 + 3, 1] == w[1, 3, 1, 2]
    assert torch.equal(unflatten_kernel(m, w.shape), w)
    batched = torch.randn(2, 5, 4, 3, 3)
    assert torch.equal(unflatten_kernel(flatten_kernel(batched), (5, 4, 3, 3)), batched)


@pytest.mark.parametrize("shape", [(8, 4, 3, 3), (3, 40, 3, 3), (7, 5, 1, 1)])
def test_svd_reconstructs_kernel(shape):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    space = LayerSpace(w)
    assert space.rank == min(shape[0], shape[1] * shape[2] * shape[3])
    assert space.u.dtype == torch.float64
    assert (space.reconstruct() - w.double()).abs().max() < 1e-10


def test_rank_one_direction_has_unit_norm(tiny_generator):
    space = layer_space(tiny_generator, "convs.1")
    for i in (0, space.rank // 2, space.rank - 1):
        d = Direction.singular("convs.1", i, space.rank).delta(tiny_generator, torch.float64)
        assert abs(float(d.norm()) - 1.0) < 1e-12
        # It is exactly u_i v_i^T.
        expected = unflatten_kernel(torch.outer(space.u[:, i], space.vh[i]), space.weight_shape)
        assert torch.allclose(d, expected, atol=1e-14)
    mixed = space.delta(torch.arange(1.0, space.rank + 1))
    assert abs(float(mixed.double().norm()) - 1.0) < 1e-6


def test_layer_space_is_cached_and_invalidated(tiny_generator):
    a = layer_space(tiny_generator, 3)
    assert layer_space(tiny_generator, "convs.3") is a
    with torch.no_grad():
        layer_weight(tiny_generator, 3).mul_(2.0)
    b = layer_space(tiny_generator, 3)
    assert b is not a
    torch.testing.assert_close(b.s, 2.0 * a.s)
    # A new weight tensor at the old one's address (the CUDA allocator reuses freed blocks; here
    # two tensors over one numpy buffer, both at version 0) is a new weight, not a cache hit.
    conv = tiny_generator.convs[3].conv
    buf = conv.weight.detach().numpy().copy()
    conv.weight = torch.nn.Parameter(torch.from_numpy(buf))
    c = layer_space(tiny_generator, 3)
    buf *= 3.0
    conv.weight = torch.nn.Parameter(torch.from_numpy(buf))
    torch.testing.assert_close(layer_space(tiny_generator, 3).s, 3.0 * c.s)


def test_t_zero_is_bit_identical(tiny_generator):
    z = _z(3)
    base = generate(tiny_generator, z)
    rank = layer_space(tiny_generator, "convs.3").rank
    dirs = [Direction.singular("convs.3", i, rank) for i in range(3)]
    assert torch.equal(generate(tiny_generator, z, dirs, t=[0.0, 0.0, 0.0]), base)
    assert torch.equal(tiny_generator(z), base)


def test_per_sample_shifts_equal_replaced_weights(tiny_generator):
    z = _z(3, seed=1)
    layer = "convs.2"  # an upsampling conv: exercises the transposed grouped conv
    rank = layer_space(tiny_generator, layer).rank
    dirs = [
        Direction.singular(layer, 0, rank),
        Direction(layer, "svd", torch.linspace(-1, 1, rank)),
        Direction(layer, "weight", torch.randn(layer_weight(tiny_generator, layer).shape)),
    ]
    ts = [3.0, -2.0, 5.0]
    batch = generate(tiny_generator, z, dirs, t=ts)
    assert not torch.allclose(batch, generate(tiny_generator, z), atol=1e-3)
    for b, (d, t) in enumerate(zip(dirs, ts, strict=True)):
        g2 = copy.deepcopy(tiny_generator)
        with torch.no_grad():
            layer_weight(g2, layer).add_(t * d.delta(tiny_generator))
        alone = g2(z[b : b + 1])
        torch.testing.assert_close(batch[b : b + 1], alone, rtol=1e-5, atol=1e-5)


def test_shift_never_modifies_parameters(tiny_generator):
    before = {k: v.clone() for k, v in tiny_generator.state_dict().items()}
    rank = layer_space(tiny_generator, 1).rank
    d = Direction.singular("convs.1", 2, rank)
    out = generate(tiny_generator, _z(2), d, t=torch.tensor([4.0, -4.0], requires_grad=True))
    out.sum().backward()
    after = tiny_generator.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k


def test_shift_is_differentiable_in_t(tiny_generator):
    rank = layer_space(tiny_generator, "conv1").rank
    d = Direction.singular("conv1", 0, rank)
    t = torch.tensor([1.0], requires_grad=True)
    generate(tiny_generator, _z(1), d, t=t).square().mean().backward()
    assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs() > 0


def test_shift_validation(tiny_generator):
    rank = layer_space(tiny_generator, 3).rank
    with pytest.raises(ValueError, match="cannot be shifted"):
        tiny_generator.synthesis(
            tiny_generator.mapping(_z(1)), shift=LayerShift("to_rgb1", torch.zeros(3, 16, 1, 1))
        )
    with pytest.raises(ValueError, match="must be"):
        tiny_generator.synthesis(
            tiny_generator.mapping(_z(2)), shift=LayerShift("convs.3", torch.zeros(3, 3, 3))
        )
    with pytest.raises(ValueError, match="share a layer"):
        shift_deltas(
            tiny_generator,
            [Direction.singular("convs.3", 0, rank), Direction.singular("convs.1", 0, rank)],
            [1.0, 1.0],
        )
    with pytest.raises(ValueError, match="2 directions for 3"):
        shift_deltas(tiny_generator, [Direction.singular("convs.3", 0, rank)] * 2, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="finite"):
        shift_deltas(tiny_generator, Direction.singular("convs.3", 0, rank), float("nan"))
    with pytest.raises(ValueError, match="all zeros"):
        Direction("convs.3", "svd", torch.zeros(rank))
    with pytest.raises(ValueError, match="NaN"):
        Direction("convs.3", "svd", torch.full((rank,), float("nan")))
    with pytest.raises(ValueError, match="expected 16 coefficients"):
        Direction("convs.3", "svd", torch.ones(rank + 1)).delta(tiny_generator)
    with pytest.raises(ValueError, match="weight shape"):
        Direction("convs.3", "weight", torch.ones(1, 2, 3, 3)).delta(tiny_generator)
    with pytest.raises(ValueError, match="basis"):
        Direction("convs.3", "hessian", torch.ones(rank))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no shift space"):
        layer_space(tiny_generator, "to_rgbs.0")
    with pytest.raises(ValueError, match="NaN or Inf"):
        LayerSpace(torch.full((2, 2, 3, 3), float("inf")))


def _latent(seed: int = 0) -> Direction:
    v = torch.randn(32, generator=torch.Generator().manual_seed(seed))
    return Direction("w", "latent", v, name=f"latent{seed}")


@pytest.mark.parametrize("basis", ["latent", "svd"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_magnitudes_are_refused_for_every_basis(tiny_generator, basis, bad):
    """Issue 22, item 1: latent directions took NaN / inf magnitudes (NaN images); one check
    refuses them for latent and weight-space directions alike."""
    rank = layer_space(tiny_generator, 3).rank
    d = _latent() if basis == "latent" else Direction.singular("convs.3", 0, rank)
    with pytest.raises(ValueError, match="shift magnitudes t must be finite"):
        generate(tiny_generator, _z(2), d, t=[0.0, bad])
    with pytest.raises(ValueError, match="shift magnitudes t must be finite"):
        generate(tiny_generator, _z(1), d, t=bad)


def test_an_empty_batch_is_a_named_error(tiny_generator):
    """Issue 22, item 9: an empty batch reached the kernels (IndexError in the native
    modulated conv); ``generate`` and ``shifted_modconv`` name it instead."""
    from navcuda.ops.shifted_modconv import shifted_modconv

    rank = layer_space(tiny_generator, 3).rank
    for d, t in [(None, 0.0), (Direction.singular("convs.3", 0, rank), 1.0), (_latent(), 1.0)]:
        with pytest.raises(ValueError, match="the batch is empty: got 0 latents"):
            generate(tiny_generator, torch.zeros(0, 32), d, t)
    x, w = torch.randn(0, 4, 8, 8), torch.randn(5, 4, 3, 3)
    with pytest.raises(ValueError, match=r"shifted_modconv.*empty batch \[0, 4, 8, 8\]"):
        shifted_modconv(x, w, torch.randn(0, 4))


@pytest.mark.parametrize("basis", ["latent", "svd"])
def test_direction_and_magnitude_counts_must_match_the_batch(tiny_generator, basis):
    """Issue 22, item 9: a latent direction count that did not match the batch was a raw
    RuntimeError of ``expand``; both kinds of direction now name the counts."""
    rank = layer_space(tiny_generator, 3).rank

    def direction(i: int) -> Direction:
        return _latent(i) if basis == "latent" else Direction.singular("convs.3", i, rank)

    z = _z(2)
    three = [direction(i) for i in range(3)]
    with pytest.raises(ValueError, match="a batch of 2 samples takes one direction or 2 .*got 3"):
        generate(tiny_generator, z, three, t=1.0)
    with pytest.raises(ValueError, match="one shift magnitude t or 2, got 3"):
        generate(tiny_generator, z, direction(0), t=[1.0, 2.0, 3.0])
    # one direction or one per sample, one magnitude (scalar or [1]) or one per sample
    one = generate(tiny_generator, z, direction(0), t=2.0)
    torch.testing.assert_close(generate(tiny_generator, z, [direction(0)], t=[2.0]), one)
    torch.testing.assert_close(generate(tiny_generator, z, direction(0), t=[2.0, 2.0]), one)
    pair = generate(tiny_generator, z, three[:2], t=[2.0, -1.0])
    torch.testing.assert_close(pair[:1], one[:1])


def test_huge_magnitudes_warn_with_the_factor_but_render(tiny_generator):
    """Issue 22, item 10: ``t = 1e30`` rendered noise without a word. Beyond 100 x the layer's
    kernel norm (latent: sqrt(dim)) a LargeShiftWarning names the factor; edit-sized shifts,
    up to the calibration's 10 x, say nothing."""
    import re
    import warnings

    from navcuda.shift import LARGE_SHIFT_FACTOR, LargeShiftWarning, shift_reference

    rank = layer_space(tiny_generator, 3).rank
    d = Direction.singular("convs.3", 0, rank)
    norm = float(tiny_generator.kernel("convs.3").detach().double().norm())
    assert shift_reference(tiny_generator, d)[0] == pytest.approx(norm)
    factor = re.escape(f"is {1e30 / norm:.3g} x the norm of layer convs.3's kernel")
    with pytest.warns(LargeShiftWarning, match=factor):
        img = generate(tiny_generator, _z(2), d, t=[0.0, 1e30])
    assert img.shape == (2, 3, 16, 16)
    with pytest.warns(LargeShiftWarning, match=r"x sqrt\(32\), the typical norm of a latent"):
        generate(tiny_generator, _z(1), _latent(), t=3e38)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LargeShiftWarning)
        generate(tiny_generator, _z(1), d, t=10 * norm)
        generate(tiny_generator, _z(1), d, t=-0.99 * LARGE_SHIFT_FACTOR * norm)
        generate(tiny_generator, _z(1), _latent(), t=10 * 32**0.5)

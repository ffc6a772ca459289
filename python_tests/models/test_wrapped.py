"""navcuda.wrap: any torch conv generator behind the generator interface.

Oracles are independent of the hook mechanism: the original module with its weight replaced by
``W_eff + t Delta`` (float64), and each sample of a batch rendered alone."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from navcuda.models.interface import GeneratorError, Inputs, LayerShift
from navcuda.models.wrapped import effective_weight, wrap

F64 = dict(rtol=0, atol=1e-10)


@pytest.fixture
def wrapped(tiny_conv_model, tiny_sampler):
    return wrap(tiny_conv_model(), tiny_sampler, latent="z")


def _replaced(model: nn.Module, layer: str, weight: torch.Tensor) -> nn.Module:
    """A fresh copy of ``model`` (same state) whose ``layer`` convolves with ``weight`` (navcuda
    layout), its parametrisation removed: the oracle."""
    copy = type(model)(model.num_classes).double()
    copy.load_state_dict(model.state_dict())
    copy.eval()
    mod = copy.get_submodule(layer)
    if hasattr(mod, "weight_orig"):
        nn.utils.remove_spectral_norm(mod)
    if hasattr(mod, "parametrizations"):
        torch.nn.utils.parametrize.remove_parametrizations(mod, "weight")
    w = weight.transpose(0, 1) if isinstance(mod, nn.ConvTranspose2d) else weight
    with torch.no_grad():
        mod.weight.copy_(w)
    return copy


def test_layers_listed_in_execution_order_with_kinds_and_resolutions(wrapped):
    infos = wrapped.layers()
    assert [i.name for i in infos] == ["up", "sn", "grouped", "wn", "out"]
    assert [i.kind for i in infos] == ["conv_transpose2d"] + ["conv2d"] * 4
    assert [i.index for i in infos] == list(range(5))
    assert {i.resolution for i in infos} == {8}
    assert infos[0].weight_shape == (8, 16, 4, 4)  # [out, in, kh, kw], transposed from torch's
    assert infos[2].weight_shape == (8, 4, 3, 3)  # groups=2: in / groups
    assert wrapped.layer(1).name == "sn" and wrapped.layer("wn").index == 3
    assert wrapped.image_shape == (3, 8, 8)


def test_effective_kernels_are_what_the_layers_convolve_with(wrapped):
    m = wrapped.module
    sn = m.sn
    # eval mode: sigma is u^T W v with the stored power-iteration vectors (no new iteration)
    sigma = sn.weight_u @ sn.weight_orig.flatten(1) @ sn.weight_v
    torch.testing.assert_close(wrapped.kernel("sn"), sn.weight_orig / sigma, rtol=1e-12, atol=0)
    v = m.wn.parametrizations.weight.original1
    g = m.wn.parametrizations.weight.original0
    torch.testing.assert_close(
        wrapped.kernel("wn"), g * v / v.flatten(1).norm(dim=1)[:, None, None, None]
    )
    assert torch.equal(wrapped.kernel("up"), m.up.weight.transpose(0, 1))
    assert torch.equal(effective_weight(m.out), m.out.weight)


@pytest.mark.parametrize("layer", ["up", "sn", "grouped", "wn", "out"])
def test_shared_shift_equals_the_module_with_the_weight_replaced(wrapped, layer):
    x = wrapped.sample(3, 1)
    gen = torch.Generator().manual_seed(2)
    delta = torch.randn(wrapped.layer(layer).weight_shape, generator=gen, dtype=torch.float64)
    t = 0.37
    with torch.no_grad():
        got = wrapped.render(x, LayerShift(layer, t * delta))
        oracle = _replaced(wrapped.module, layer, wrapped.kernel(layer) + t * delta)(x["z"])
        base = wrapped.render(x)
    torch.testing.assert_close(got, oracle, **F64)
    assert (got - base).abs().max() > 1e-3  # the shift changed the images


@pytest.mark.parametrize("how", ["grouped", "vmap", "auto"])
@pytest.mark.parametrize("layer", ["up", "grouped", "wn"])
def test_per_sample_shifts_equal_each_sample_rendered_alone(wrapped, layer, how):
    wrapped.per_sample = how
    info = wrapped.layer(layer)
    x = wrapped.sample(5, 3)
    gen = torch.Generator().manual_seed(4)
    deltas = torch.randn(5, *info.weight_shape, generator=gen, dtype=torch.float64)
    t = torch.tensor([0.2, -0.5, 0.0, 1.0, 0.3], dtype=torch.float64)
    with torch.no_grad():
        alone = torch.cat(
            [wrapped.render(x.take([b]), LayerShift(layer, t[b] * deltas[b])) for b in range(5)]
        )
        per_sample = wrapped.render(x, LayerShift(layer, t.view(-1, 1, 1, 1, 1) * deltas))
        # few directions over many samples: one convolution per direction
        index = torch.tensor([0, 1, 1, 0, 1])
        split = wrapped.render(x, LayerShift.split(layer, deltas[:2], t, index))
        split_alone = torch.cat(
            [
                wrapped.render(x.take([b]), LayerShift(layer, t[b] * deltas[index[b]]))
                for b in range(5)
            ]
        )
        # one direction per sample, in SVD coefficients
        from navcuda.shift import layer_space

        space = layer_space(wrapped, layer)
        coeffs = torch.randn(5, space.rank, generator=gen, dtype=torch.float64)
        svd = wrapped.render(x, LayerShift.svd(layer, space.u, space.s, space.vh, t, coeffs))
        svd_alone = torch.cat(
            [
                wrapped.render(
                    x.take([b]), LayerShift(layer, t[b] * space.delta(coeffs[b], torch.float64))
                )
                for b in range(5)
            ]
        )
    torch.testing.assert_close(per_sample, alone, **F64)
    torch.testing.assert_close(split, split_alone, **F64)
    torch.testing.assert_close(svd, svd_alone, **F64)


def test_several_layers_at_once_and_nothing_mutated(wrapped):
    before = {k: v.clone() for k, v in wrapped.module.state_dict().items()}
    x = wrapped.sample(2, 5)
    gen = torch.Generator().manual_seed(6)
    d_up = torch.randn(wrapped.layer("up").weight_shape, generator=gen, dtype=torch.float64)
    d_out = torch.randn(wrapped.layer("out").weight_shape, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        got = wrapped.render(x, [LayerShift("up", 0.1 * d_up), LayerShift("out", 0.2 * d_out)])
        oracle = _replaced(wrapped.module, "up", wrapped.kernel("up") + 0.1 * d_up)
        oracle.out.weight.add_(0.2 * d_out)
        want = oracle(x["z"])
    torch.testing.assert_close(got, want, **F64)
    after = wrapped.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    for mod in wrapped.module.modules():
        assert not mod._forward_hooks  # the call's hooks are gone
    assert not wrapped.module.training


def test_a_shift_in_one_thread_does_not_reach_a_render_in_another(wrapped):
    """The hooks of a call are registered on the shared module but inert for other calls."""
    x = wrapped.sample(2, 7)
    with torch.no_grad():
        plain = wrapped.render(x)
    inside, release = threading.Event(), threading.Event()
    real_forward = wrapped._forward

    def slow_forward(module, inputs):
        if inputs.options.get("slow"):
            inside.set()
            release.wait(30)
        return real_forward(module, inputs.with_options(slow=None))

    wrapped._forward = slow_forward
    delta = torch.ones(wrapped.layer("sn").weight_shape, dtype=torch.float64)
    shifted = {}
    th = threading.Thread(
        target=lambda: shifted.update(
            y=wrapped.render(x.with_options(slow=True), LayerShift("sn", delta))
        )
    )
    with torch.no_grad():
        th.start()
        assert inside.wait(30)
        other = wrapped.render(x)  # runs while the other call's hooks are registered
        release.set()
        th.join(30)
    torch.testing.assert_close(other, plain, rtol=0, atol=0)
    assert (shifted["y"] - plain).abs().max() > 1e-3


def test_bad_input_gets_named_errors(tiny_conv_model, tiny_sampler):
    m = tiny_conv_model()
    with pytest.raises(GeneratorError, match="Linear, which navcuda cannot shift"):
        wrap(m, tiny_sampler, layers=["fc"])
    with pytest.raises(GeneratorError, match="no submodule 'nope'"):
        wrap(m, tiny_sampler, layers=["nope"])
    with pytest.raises(GeneratorError, match="takes no label"):
        wrap(m, lambda n, seed: tiny_sampler(n, seed), num_classes=3)
    with pytest.raises(GeneratorError, match="no layer navcuda can shift"):
        wrap(nn.Sequential(nn.Linear(2, 2)), tiny_sampler)

    g = wrap(m, lambda n, seed: {"z": torch.zeros(n + 1, 8, dtype=torch.float64)})
    with pytest.raises(GeneratorError, match="batch of 3 for n=2"):
        g.sample(2, 0)
    g = wrap(m, lambda n, seed: {"z": torch.zeros(n, 8), "c": torch.zeros(n + 1)})
    with pytest.raises(GeneratorError, match="disagree on the batch size"):
        g.sample(2, 0)
    g = wrap(m, lambda n, seed: torch.zeros(n, 8))
    with pytest.raises(GeneratorError, match="must return a mapping"):
        g.sample(2, 0)
    g = wrap(m, lambda n, seed: {"z": [0.0] * n})
    with pytest.raises(GeneratorError, match="must be a tensor"):
        g.sample(2, 0)

    g = wrap(m, tiny_sampler)
    with pytest.raises(GeneratorError, match="unconditional"):
        g.sample(2, 0, label=1)
    with pytest.raises(GeneratorError, match=r"shift for layer 'up' must be \[8, 16, 4, 4\]"):
        g.render(g.sample(1, 0), LayerShift("up", torch.zeros(8, 8, 4, 4, dtype=torch.float64)))
    with pytest.raises(KeyError, match="no layer 'fc'"):
        g.render(g.sample(1, 0), LayerShift("fc", torch.zeros(1)))
    with pytest.raises(GeneratorError, match="Inputs"):
        g.render(torch.zeros(1, 8))
    g = wrap(m, tiny_sampler, forward=lambda mod, x: mod(x["z"])[:, 0])
    with pytest.raises(GeneratorError, match=r"images \[B=1, C, H, W\]"):
        g.render(g.sample(1, 0))

    unused = tiny_conv_model()
    unused.spare = nn.Conv2d(3, 3, 1).double()  # never called by forward
    g = wrap(unused, tiny_sampler)
    assert g.layers()[-1].name == "spare" and g.layers()[-1].resolution is None
    with pytest.raises(GeneratorError, match="never ran them"):
        g.render(g.sample(1, 0), LayerShift("spare", torch.zeros(3, 3, 1, 1, dtype=torch.float64)))


def test_conditional_labels_are_checked_and_passed(tiny_conv_model, tiny_sampler):
    g = wrap(tiny_conv_model(num_classes=4), tiny_sampler, num_classes=4)
    x = g.sample(3, 0, label=2)
    assert x["label"].tolist() == [2, 2, 2]
    assert g.sample_seeds([5, 6], label=[1, 3])["label"].tolist() == [1, 3]
    for bad in (4, -1, [0, 9, 1]):
        with pytest.raises(GeneratorError, match="class label out of range"):
            g.sample(3, 0, label=bad)
    with pytest.raises(GeneratorError, match="integers"):
        g.sample(3, 0, label=1.5)
    with pytest.raises(GeneratorError, match="2 class labels for 3"):
        g.sample(3, 0, label=[1, 2])


def test_inputs_batches():
    x = Inputs(
        {"z": torch.arange(6.0).view(3, 2), "label": torch.tensor([0, 1, 2]), "m": None}, {"o": 1}
    )
    assert len(x) == 3 and "m" not in x and x.options == {"o": 1}
    assert x.take([2, 0])["label"].tolist() == [2, 0]
    b = x.take(torch.tensor([1, 1]), broadcast=True)["z"]
    assert b.stride(0) == 0 and b.tolist() == [[2.0, 3.0]] * 2
    assert [len(c) for c in x.chunks(2)] == [2, 1]
    assert torch.equal(Inputs.cat(list(x.chunks(2)))["z"], x["z"])
    assert x.to(dtype=torch.float64)["label"].dtype == torch.int64
    with pytest.raises(GeneratorError, match="different names or options"):
        Inputs.cat([x, x.with_options(o=2)])
    with pytest.raises(GeneratorError, match="no tensor"):
        Inputs({"m": None})


def test_a_generator_seed_reaches_the_sampler_as_a_numpy_seed(tiny_conv_model):
    """A training loop samples with a ``torch.Generator``; the sampler gets an int drawn from it
    that ``numpy.random.RandomState`` accepts (``[0, 2**32)``; draws in ``[0, 2**62)`` made
    BigGAN's ``truncated_noise_sample(seed=...)`` fail in the optimisation's first step)."""
    import numpy as np

    seen = []

    def sampler(n, seed):
        seen.append(seed)
        z = np.random.RandomState(seed).standard_normal((n, 8))
        return {"z": torch.from_numpy(z)}

    g = wrap(tiny_conv_model(), sampler)
    a = g.sample(2, torch.Generator().manual_seed(0))
    for s in range(1, 50):
        g.sample(1, torch.Generator().manual_seed(s))
    assert all(isinstance(s, int) and 0 <= s < 2**32 for s in seen)
    assert len(set(seen)) == 50
    torch.testing.assert_close(g.sample(2, torch.Generator().manual_seed(0))["z"], a["z"])


def test_navcuda_modulated_convs_inside_a_wrapped_module(tiny_generator):
    """navcuda's own StyleGAN2 wrapped as a plain module: its StyledConv layers are listed as
    modulated (their inner ModulatedConv2d and the toRGB convs are not), and a shift given
    to the wrapper renders what the native generator renders with it."""
    g = tiny_generator.double()
    wrapped = wrap(g, lambda n, seed: g.sample(n, seed), forward=lambda m, x: m.synthesis(x["ws"]))
    names = [i.name for i in wrapped.layers()]
    assert names == [i.name for i in g.layers() if i.shiftable]
    assert {i.kind for i in wrapped.layers()} == {"modulated"}
    x = g.sample(3, 4)
    gen = torch.Generator().manual_seed(5)
    delta = torch.randn(g.layer("convs.1").weight_shape, generator=gen, dtype=torch.float64)
    t = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    shift = LayerShift.split("convs.1", delta[None], t)
    with torch.no_grad():
        torch.testing.assert_close(wrapped.render(x), g.render(x), **F64)
        torch.testing.assert_close(wrapped.render(x, shift), g.render(x, shift), **F64)

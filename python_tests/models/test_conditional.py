"""Conditional StyleGAN2 (NVlabs stylegan2-ada, ``c_dim > 0``): the label embedding of the
mapping, labels in the inputs, and labels held fixed by the methods."""

from __future__ import annotations

import math

import pytest
import torch

import navcuda
from navcuda.models import Generator, GeneratorError, load_generator, save_generator


@pytest.fixture
def cond(tiny_config) -> Generator:
    torch.manual_seed(0)
    g = Generator(tiny_config(c_dim=4)).eval()
    with torch.no_grad():
        g.embed.bias.normal_(0, 0.3)
    g.update_w_avg(256)
    return g


def _nvlabs_mapping(g: Generator, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """NVlabs' MappingNetwork.forward written out (training/networks.py): normalise z,
    embed c with a linear layer (gain 1/sqrt(c_dim)), normalise it, concatenate, then the
    lrelu layers (gain sqrt(2), lr multiplier)."""

    def norm(x):
        return x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()

    y = c @ (g.embed.weight / math.sqrt(c.shape[1])).t() + g.embed.bias
    x = torch.cat([norm(z), norm(y)], dim=1)
    for layer in g.style[1:]:
        lr = layer.lr_mul
        x = x @ (layer.weight * lr / math.sqrt(x.shape[1])).t() + layer.bias * lr
        x = torch.nn.functional.leaky_relu(x, 0.2) * math.sqrt(2)
    return x


def test_mapping_embeds_the_label_as_nvlabs_does(cond):
    z = torch.randn(5, cond.config.z_dim, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 3, 1, 1, 2])
    onehot = torch.nn.functional.one_hot(labels, 4).float()
    with torch.no_grad():
        w = cond.mapping(z, c=labels)
        torch.testing.assert_close(w, _nvlabs_mapping(cond, z, onehot), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(cond.mapping(z, c=onehot), w, rtol=0, atol=0)
        # the label matters
        assert (cond.mapping(z, c=(labels + 1) % 4) - w).abs().max() > 1e-3
        # truncation pulls towards w_avg
        w_t = cond.mapping(z, 0.5, labels)
        torch.testing.assert_close(w_t, cond.w_avg + 0.5 * (w - cond.w_avg))


def test_labels_are_inputs_checked_and_reproducible(cond):
    x = cond.sample(6, 3)
    assert x["label"].tolist() == cond.sample(6, 3)["label"].tolist()
    assert len(set(x["label"].tolist())) > 1  # drawn from the seed
    assert cond.sample(6, 3, label=2)["label"].tolist() == [2] * 6
    assert cond.sample_seeds([7, 8], label=[1, 0])["label"].tolist() == [1, 0]
    assert cond.num_classes == 4
    for bad, msg in [(4, "out of range"), (-1, "out of range"), (1.5, "integers")]:
        with pytest.raises(GeneratorError, match=msg):
            cond.sample(2, 0, label=bad)
    z = torch.zeros(2, cond.config.z_dim)
    with pytest.raises(GeneratorError, match="conditional .4 classes.: give labels"):
        cond.mapping(z)
    with pytest.raises(GeneratorError, match=r"floating labels must be finite \[2, 4\]"):
        cond.mapping(z, c=torch.ones(2, 3))


def test_unconditional_refuses_labels(tiny_generator):
    with pytest.raises(GeneratorError, match="unconditional"):
        tiny_generator.sample(2, 0, label=1)
    with pytest.raises(GeneratorError, match="unconditional"):
        tiny_generator.mapping(torch.zeros(2, 32), c=torch.tensor([0, 1]))


def test_generate_takes_c_and_files_round_trip(cond, tmp_path):
    z = torch.randn(3, cond.config.z_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        img = navcuda.generate(cond, z, c=torch.tensor([1, 2, 3]))
        again = cond.render(cond.from_z(z, label=torch.tensor([1, 2, 3])))
    torch.testing.assert_close(img, again, rtol=0, atol=0)
    path = save_generator(cond, tmp_path / "cond.safetensors")
    loaded = load_generator(path)
    assert loaded.config.c_dim == 4 and loaded.config.embed_dim == cond.config.w_dim
    x = cond.sample(2, 5)
    with torch.no_grad():
        torch.testing.assert_close(loaded.render(x), cond.render(x), rtol=0, atol=0)
    assert loaded.fingerprint() == cond.fingerprint()


def test_discovery_holds_the_label_fixed(cond):
    """Every shifted render of the optimisation and the calibration sees the label of the
    unshifted one (recorded per latent row); one class for a run when asked."""
    labels_of: dict[tuple, set] = {}
    real = cond.render

    def recording(inputs, shift=None):
        for w, lab in zip(inputs["ws"].tolist(), inputs["label"].tolist(), strict=True):
            labels_of.setdefault(tuple(w), set()).add(lab)
        return real(inputs, shift)

    cond.render = recording
    cond.resume = lambda state, shift=None: recording(state.inputs, shift)  # no prefix cache
    navcuda.discover(cond, 3, method="optimize", k=3, steps=2, batch_size=6,
                     reconstructor_size=16, progress=False)  # fmt: skip
    assert all(len(labs) == 1 for labs in labels_of.values())
    assert len({next(iter(labs)) for labs in labels_of.values()}) > 1
    labels_of.clear()
    ds = navcuda.discover(cond, 3, method="svd", k=2, label=1)
    assert ds.hparams["label"] == 1 and set().union(*labels_of.values()) == {1}

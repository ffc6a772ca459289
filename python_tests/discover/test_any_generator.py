"""The paper's methods on a generator that is not navcuda's StyleGAN2: a plain torch conv
generator behind navcuda.wrap (transposed, spectral-normed, grouped, weight-normed convs).

The Hessian oracle is independent of navcuda's shift mechanism: the loss written with
``torch.func.functional_call`` on the module with the layer's weight replaced, differentiated
twice by autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from navcuda import discover, render, wrap
from navcuda.gallery import build_gallery
from navcuda.hessian import PerceptualHessian
from navcuda.metrics.perceptual import PixelMSE, RandomFeatureLPIPS
from navcuda.models.interface import GeneratorError

LAYER = "grouped"  # a plain Conv2d (8 -> 8, groups 2, reflect padding): 288 weights


@pytest.fixture
def g(tiny_conv_model, tiny_sampler):
    return wrap(tiny_conv_model(), tiny_sampler, latent="z", latent_readers=["fc"])


def _loss_oracle(g, layer: str, inputs, metric, resize: int | None):
    """``L(delta) = mean_z d(R(G(z)), R(G_{W + delta}(z)))`` by functional_call on the module."""
    module = g.module
    w = module.get_submodule(layer).weight.detach()
    z = inputs["z"]

    def resized(img):
        return img if resize is None else F.interpolate(img, size=(resize, resize))

    with torch.no_grad():
        f0 = [f.detach() for f in metric.features(resized(module(z)))]

    def loss(delta):
        img = torch.func.functional_call(module, {f"{layer}.weight": w + delta}, (z,))
        return metric.distance_from_features(f0, metric.features(resized(img))).mean()

    return loss


@pytest.mark.parametrize("metric", ["pixel", "random-vgg"])
def test_generic_gauss_newton_equals_double_backward_hessian(g, metric):
    m = PixelMSE() if metric == "pixel" else RandomFeatureLPIPS(seed=0, channels=(4, 8)).double()
    inputs = g.sample(3, 0)
    h = PerceptualHessian(g, LAYER, inputs, m, batch_size=4, resize=None)
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(3, *h.shape, generator=gen, dtype=torch.float64)
    gn = h.hvp_gn(v)
    assert h.gn_mode_used == "forward"  # no shared-primal linearisation: forward-mode AD
    loss = _loss_oracle(g, LAYER, inputs, m, None)
    zero = torch.zeros(h.shape, dtype=torch.float64)
    ref = torch.stack([torch.autograd.functional.hvp(loss, zero, vi)[1] for vi in v])
    # both exact at delta = 0: float64 rounding only
    assert ((gn - ref).norm() / ref.norm()).item() < 1e-6
    if metric == "pixel":  # the batched central difference through the hooks agrees to O(eps)
        fd = h.hvp_fd(v, eps=1e-4)  # (first order: relu kinks)
        assert ((fd - ref).norm() / ref.norm()).item() < 1e-2


def test_spectrum_converges_on_a_wrapped_generator(g):
    ds = discover(g, LAYER, method="spectrum", k=3, metric=PixelMSE(), n_latents=4, tol=1e-6,
                  max_iters=60, resize=None, calibrate=False, progress=False)  # fmt: skip
    assert ds.extra["converged"] and ds.extra["gn_mode"] == "forward"
    assert ds.model == g.architecture and ds.fingerprint == g.fingerprint()
    # the eigenpairs of the explicit Hessian of the same loss (288 x 288)
    h = PerceptualHessian(g, LAYER, g.sample(4, 0), PixelMSE(), resize=None)
    evals, evecs = torch.linalg.eigh(h.explicit_hessian(max_params=300))
    top = evecs[:, -3:].flip(1).t()
    torch.testing.assert_close(ds.values.double(), evals[-3:].flip(0), rtol=1e-4, atol=0)
    overlap = (ds.coefficients.flatten(1).double() @ top.t()).abs().diagonal()
    assert overlap.min() > 0.999


def test_every_method_runs_and_renders(g, tmp_path):
    quick = {
        "svd": {},
        "spectrum": dict(metric=PixelMSE(), n_latents=2, max_iters=3, resize=None),
        "optimize": dict(steps=3, batch_size=4, reconstructor_size=32),
        "hybrid": dict(steps=2, batch_size=4, reconstructor_size=32, basis_size=4,
                       spectrum_params=dict(metric=PixelMSE(), n_latents=2, max_iters=2,
                                            resize=None)),
        "ica": dict(components=4, n_latents=2, resize=None),
        "ganspace": dict(n_samples=64),
        "sefa": {},
    }  # fmt: skip
    sets = {}
    for method, hp in quick.items():
        if method in ("optimize", "hybrid", "spectrum", "ica"):
            hp = {**hp, "progress": False}
        ds = discover(g, "wn", method=method, k=3, **hp)
        assert len(ds) == 3 and torch.isfinite(ds.amplitudes).all() and (ds.amplitudes > 0).all()
        ds.check_compatible(g)
        sets[method] = ds
    assert sets["ganspace"].layer == "w" and sets["sefa"].weight_shape == (8,)
    res = render(g, sets["svd"], [0, 1], ts=[-1, 0, 1], output_dir=tmp_path / "strips")
    assert res.images.shape == (3, 2, 3, 3, 8, 8) and len(res.files) == 3
    # t = 0 renders the unshifted images, whatever the direction
    with torch.no_grad():
        base = g.render(g.sample_seeds([0, 1], truncation_psi=0.7))
    torch.testing.assert_close(res.images[:, :, 1], base.float().expand(3, -1, -1, -1, -1))
    index = build_gallery(g, sets["spectrum"], tmp_path / "site", seeds=[0], ts=[-1, 0, 1])
    assert index.is_file()
    render(g, sets["ganspace"], [0], ts=[-1, 1])


def test_methods_refuse_what_the_generator_lacks(tiny_conv_model, tiny_sampler):
    g = wrap(tiny_conv_model(), tiny_sampler)  # no latent, no readers
    with pytest.raises(GeneratorError, match="exposes none"):
        discover(g, "wn", method="ganspace", k=2)
    g = wrap(tiny_conv_model(), tiny_sampler, latent="z")
    with pytest.raises(GeneratorError, match="SeFa"):
        discover(g, "wn", method="sefa", k=2)
    from navcuda.project import project

    with pytest.raises(GeneratorError, match="needs a StyleGAN2 generator"):
        project(g, torch.zeros(1, 3, 8, 8), steps=1)


def test_a_class_label_is_the_same_in_both_renders_of_every_pair(tiny_conv_model):
    """Record the (latent, label) rows the module receives: a latent must meet the same label in
    the unshifted and every shifted render (calibration, optimisation), labels differ between
    samples, and both kinds of render happen (resampling labels would be caught)."""

    def sampler(n, seed, label=None):  # row i of a seed: the same (z, label) whatever n
        z = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        if label is None:
            label = torch.randint(5, (n,), generator=torch.Generator().manual_seed(seed + 1))
        return {"z": z, "label": label}

    g = wrap(tiny_conv_model(num_classes=5), sampler, num_classes=5)
    labels_of: dict[tuple, set] = {}
    kinds = set()
    real_render = g.render

    def recording(inputs, shift=None):
        kinds.add(shift is not None)
        for z, lab in zip(inputs["z"].tolist(), inputs["label"].tolist(), strict=True):
            labels_of.setdefault(tuple(z), set()).add(lab)
        return real_render(inputs, shift)

    g.render = recording
    discover(g, "wn", method="optimize", k=3, steps=2, batch_size=6, reconstructor_size=32,
             progress=False)  # fmt: skip
    discover(g, "wn", method="spectrum", k=2, metric=PixelMSE(), n_latents=3, max_iters=2,
             resize=None, progress=False)  # fmt: skip
    assert kinds == {False, True}
    assert all(len(labs) == 1 for labs in labels_of.values())
    assert len({next(iter(labs)) for labs in labels_of.values()}) > 1

    # one class for a whole run
    labels_of.clear()
    discover(g, "wn", method="svd", k=2, label=3)
    assert labels_of and all(labs == {3} for labs in labels_of.values())

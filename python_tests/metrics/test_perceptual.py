"""Perceptual metrics: distance axioms, determinism, LPIPS backbone loading, input checks."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from navcuda.metrics.perceptual import (
    BACKBONE_FILES,
    METRIC_NAMES,
    FeatureLPIPS,
    LPIPSMetric,
    PixelMSE,
    RandomFeatureLPIPS,
    make_metric,
    resolve_metric_name,
)


def _images(b=3, size=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    # smooth-ish images in [-1, 1]: a few low-frequency blobs, upsampled
    low = torch.rand(b, 3, size // 4, size // 4, generator=gen) * 2 - 1
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear")


class _TwoLayer(nn.Module):
    """A tiny deterministic feature extractor for FeatureLPIPS."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, stride=2)
        with torch.no_grad():
            for c in (self.c1, self.c2):
                c.weight.copy_(torch.randn(c.weight.shape, generator=gen) * 0.3)
                c.bias.zero_()

    def forward(self, x):
        h1 = torch.tanh(self.c1(x))
        h2 = torch.tanh(self.c2(h1))
        return [h1, h2, h2.mean(dim=(2, 3))]


def _metrics(lpips_vgg):
    return [
        PixelMSE(),
        RandomFeatureLPIPS(seed=0, channels=(8, 16, 16)),
        FeatureLPIPS(_TwoLayer(), name="two-layer"),
        lpips_vgg,
    ]


def test_distance_axioms_and_noise_ladder(lpips_vgg):
    x = _images()
    gen = torch.Generator().manual_seed(5)
    noise = torch.randn(x.shape, generator=gen)
    for m in _metrics(lpips_vgg):
        assert torch.equal(m(x, x), torch.zeros(3)), m.name
        y = (x + 0.2 * noise).clamp(-1, 1)
        d_xy, d_yx = m(x, y), m(y, x)
        assert d_xy.shape == (3,)
        torch.testing.assert_close(d_xy, d_yx, rtol=1e-5, atol=1e-7, msg=m.name)
        ladder = [m(x, x + a * noise) for a in (0.01, 0.03, 0.1, 0.3, 1.0)]
        for lo, hi in zip(ladder, ladder[1:], strict=False):
            assert (hi > lo).all(), (m.name, ladder)


def test_features_reuse_matches_forward(lpips_vgg):
    a, b = _images(seed=1), _images(seed=2)
    for m in _metrics(lpips_vgg):
        fa = [f.detach() for f in m.features(a)]
        torch.testing.assert_close(m.distance_from_features(fa, m.features(b)), m(a, b))


def test_random_metric_is_deterministic_and_leaves_global_rng_alone():
    a, b = _images(seed=1), _images(seed=2)
    state = torch.random.get_rng_state()
    m1, m2 = RandomFeatureLPIPS(seed=7), RandomFeatureLPIPS(seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    for p1, p2 in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(p1, p2)
    assert torch.equal(m1(a, b), m2(a, b))
    assert not torch.equal(RandomFeatureLPIPS(seed=8)(a, b), m1(a, b))
    # known values pin the construction (CPU torch.Generator draws are machine-independent)
    first = m1.feature_fn.blocks[0][0].weight.flatten()[:3]
    torch.testing.assert_close(first, torch.tensor([-0.22321235, 0.10767717, 0.24465191]))
    assert m1.describe()["seed"] == 7 and m1.describe()["name"] == "random-vgg"


def test_gradients_flow_to_images_not_parameters():
    m = RandomFeatureLPIPS(channels=(8, 16))
    a = _images().requires_grad_(True)
    m(a, _images(seed=3)).sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in m.parameters())
    m.train()
    assert not m.training  # metrics always run in eval mode


def test_resize():
    m = PixelMSE(resize=8)
    assert m.features(_images(size=32))[0].shape == (3, 3, 8, 8)
    big, small = _images(size=32), _images(size=32, seed=4)
    ref = PixelMSE()(
        torch.nn.functional.interpolate(big, size=(8, 8), mode="bilinear"),
        torch.nn.functional.interpolate(small, size=(8, 8), mode="bilinear"),
    )
    torch.testing.assert_close(m(big, small), ref)
    with pytest.raises(ValueError, match="resize"):
        PixelMSE(resize=0)
    with pytest.raises(ValueError, match="resize_mode"):
        PixelMSE(resize=8, resize_mode="lanczos")


def test_lpips_backbone_lands_in_the_right_slices(vgg_file, lpips_vgg):
    _, sd = vgg_file
    net = lpips_vgg.lpips.net
    # torchvision features.{i} -> lpips slice{k}.{i}: first/last conv of several slices
    for slice_name, idx in (("slice1", 0), ("slice2", 5), ("slice3", 14), ("slice5", 28)):
        mod = getattr(net, slice_name)._modules[str(idx)]
        assert torch.equal(mod.weight, sd[f"features.{idx}.weight"]), (slice_name, idx)
        assert torch.equal(mod.bias, sd[f"features.{idx}.bias"]), (slice_name, idx)
    n_conv = sum(isinstance(m, nn.Conv2d) for m in net.modules())
    assert n_conv == 13
    # the linear heads come from the lpips wheel (calibrated, non-negative)
    assert all((lin.model[1].weight >= 0).all() for lin in lpips_vgg.lpips.lins)
    # our features/quadratic reproduce lpips.LPIPS.forward exactly
    a, b = _images(seed=1), _images(seed=2)
    torch.testing.assert_close(lpips_vgg(a, b), lpips_vgg.lpips(a, b).flatten())
    d = lpips_vgg.describe()
    assert d["name"] == "lpips-vgg" and d["backbone_file"] == BACKBONE_FILES["vgg"]
    assert len(d["backbone_sha256"]) == 64


def test_lpips_alex_loading(tmp_path):
    torch.manual_seed(2)
    feats = torchvision.models.AlexNet().features
    sd = {f"features.{k}": v for k, v in feats.state_dict().items()}
    path = tmp_path / BACKBONE_FILES["alex"]
    torch.save(sd, path)
    m = make_metric("lpips-alex", backbone_path=path)
    assert torch.equal(m.lpips.net.slice5._modules["10"].weight, sd["features.10.weight"])
    assert torch.equal(m.lpips.net.slice2._modules["3"].weight, sd["features.3.weight"])
    a, b = _images(seed=1, size=64), _images(seed=2, size=64)
    torch.testing.assert_close(m(a, b), m.lpips(a, b).flatten())


def test_lpips_missing_and_mismatched_file(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        LPIPSMetric("vgg", backbone_path=tmp_path / "nope.pth")
    text = str(err.value)
    assert "vgg16-397923af.pth" in text and "IMAGENET1K_V1" in text and "nope.pth" in text
    # an alexnet file given for vgg: clear mismatch error naming the expected file
    alex = {
        f"features.{k}": v for k, v in torchvision.models.AlexNet().features.state_dict().items()
    }
    path = tmp_path / "wrong.pth"
    torch.save(alex, path)
    with pytest.raises(ValueError, match="vgg16-397923af.pth") as err:
        LPIPSMetric("vgg", backbone_path=path)
    assert "wrong.pth" in str(err.value)
    with pytest.raises(ValueError, match="net must be"):
        LPIPSMetric("resnet", backbone_path=path)


def test_wrong_inputs():
    m = RandomFeatureLPIPS(channels=(8,))
    x = _images()
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        m(x[0], x[0])
    with pytest.raises(ValueError, match="same shape"):
        m(x, x[:2])
    with pytest.raises(ValueError, match="3 channels"):
        m(x[:, :1], x[:, :1])
    with pytest.raises(TypeError, match="floating"):
        m(x.to(torch.int64), x.to(torch.int64))
    with pytest.raises(TypeError, match="tensor"):
        m.features([1, 2])


def test_make_metric_and_describe():
    assert set(METRIC_NAMES) == {"lpips-vgg", "lpips-alex", "random-vgg", "toy-regressor", "pixel"}
    assert make_metric("pixel").describe()["name"] == "pixel"
    d = make_metric("random-vgg", seed=3, resize=16).describe()
    assert d["name"] == "random-vgg" and d["seed"] == 3 and d["resize"] == 16
    with pytest.raises(ValueError, match="unknown metric"):
        make_metric("ssim")
    with pytest.raises(ValueError, match=">= 0"):
        FeatureLPIPS(_TwoLayer(), weights=[1, -1, 1])


def test_toy_regressor_metric_measures_factor_changes():
    """The toy world's fallback metric: zero for identical images, larger for a bigger change of
    one ground-truth factor (the regressor was trained to see exactly those changes)."""
    from navcuda.toyworld import FACTOR_NAMES, render, sample_factors

    f = sample_factors(1, seed=0).repeat(3, 1)
    j = FACTOR_NAMES.index("mouth_width")
    f[0, j], f[1, j], f[2, j] = 0.3, 0.4, 0.7
    imgs = render(f, resolution=64)
    metric = make_metric("toy-regressor")
    d = metric(imgs[[0, 0, 0]], imgs)
    assert float(d[0]) == 0.0
    assert 0 < float(d[1]) < float(d[2])
    assert metric.describe()["name"] == "toy-regressor"


def test_resolve_metric_name_auto(tmp_path):
    missing = tmp_path / "vgg16-397923af.pth"
    with pytest.warns(UserWarning, match="fallback metric 'toy-regressor'"):
        assert resolve_metric_name("auto", toy_world=True, backbone_path=missing) == "toy-regressor"
    with pytest.warns(UserWarning, match="fallback metric 'random-vgg'"):
        assert resolve_metric_name("auto", backbone_path=missing) == "random-vgg"
    missing.write_bytes(b"x")  # only existence is checked here; LPIPSMetric validates the file
    assert resolve_metric_name("auto", backbone_path=missing) == "lpips-vgg"
    assert resolve_metric_name("pixel") == "pixel"
    with pytest.raises(ValueError, match="unknown metric"):
        resolve_metric_name("inception")

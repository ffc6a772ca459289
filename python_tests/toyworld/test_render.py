"""Tests of the toy-world factor table and renderer (navcuda.toyworld)."""

from __future__ import annotations

import colorsys
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from navcuda.toyworld import (
    FACTOR_INDEX,
    FACTOR_NAMES,
    FACTORS,
    NUM_FACTORS,
    ToyWorld,
    describe_factors,
    hsv_to_rgb,
    render,
    render_numpy,
    sample_factors,
)

RES = 64
CHANGE_EPS = 0.05  # per-channel change (in [-1, 1] units) that counts as "changed"

# Pixel-centre coordinates in normalised units (image spans [-1, 1], y down).
_C = (torch.arange(RES, dtype=torch.float32) + 0.5) * (2.0 / RES) - 1.0
X = _C.view(1, -1).expand(RES, RES)
Y = _C.view(-1, 1).expand(RES, RES)
AX = X.abs()


def _base(n: int = 1, value: float = 0.5) -> torch.Tensor:
    return torch.full((n, NUM_FACTORS), value, dtype=torch.float32)


def _sweep(name: str, values) -> torch.Tensor:
    """Factors with ``name`` swept over ``values`` and every other factor at 0.5."""
    f = _base(len(values))
    f[:, FACTOR_INDEX[name]] = torch.tensor(values, dtype=torch.float32)
    return f


def _change_mask(name: str, lo: float = 0.2, hi: float = 0.8) -> torch.Tensor:
    img = render(_sweep(name, [lo, hi]), RES)
    return (img[0] - img[1]).abs().amax(0) > CHANGE_EPS


def _pixel(img: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Colour [3] of the pixel containing normalised point (x, y) of a [3, H, W] image."""
    res = img.shape[-1]
    col = min(int((x + 1.0) * 0.5 * res), res - 1)
    row = min(int((y + 1.0) * 0.5 * res), res - 1)
    return img[:, row, col]


def _near(img: torch.Tensor, colour: torch.Tensor, tol: float = 0.12) -> torch.Tensor:
    """[H, W] mask of pixels within ``tol`` (max abs per channel) of ``colour``."""
    return (img - colour.view(3, 1, 1)).abs().amax(0) < tol


def _hue_deg(colour: torch.Tensor) -> float:
    r, g, b = ((colour + 1.0) * 0.5).tolist()
    return colorsys.rgb_to_hsv(r, g, b)[0] * 360.0


def _strictly_increasing(xs) -> bool:
    return all(b > a for a, b in zip(xs, xs[1:], strict=False))


# --------------------------------------------------------------------------- factors


def test_factor_table():
    assert NUM_FACTORS >= 13
    assert len(FACTOR_NAMES) == NUM_FACTORS == len(set(FACTOR_NAMES))
    desc = describe_factors()
    assert [d["name"] for d in desc] == list(FACTOR_NAMES)
    for i, d in enumerate(desc):
        assert d["index"] == i and d["description"] and d["unit"]
        assert d["low"] != d["high"]
        assert "uniform" in d["prior"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        FACTORS[0].low = 0.0  # frozen


def test_sample_factors_seeded():
    a = sample_factors(50, seed=3)
    b = sample_factors(50, seed=3)
    c = sample_factors(50, seed=4)
    assert a.shape == (50, NUM_FACTORS) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) < 1.0
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(sample_factors(5, generator=g1), sample_factors(5, generator=g2))
    with pytest.raises(ValueError):
        sample_factors(5, generator=torch.Generator(), seed=1)
    with pytest.raises(ValueError):
        sample_factors(-1)


def test_prior_is_roughly_uniform():
    f = sample_factors(20000, seed=0)
    assert torch.allclose(f.mean(0), torch.full((NUM_FACTORS,), 0.5), atol=0.02)
    assert torch.allclose(f.var(0), torch.full((NUM_FACTORS,), 1 / 12), atol=0.01)


# --------------------------------------------------------------------------- render basics


def test_render_deterministic_and_batch_independent():
    f = sample_factors(7, seed=1)
    a, b = render(f, RES), render(f.clone(), RES)
    assert torch.equal(a, b)
    # A sample's image does not depend on the rest of the batch.
    single = torch.cat([render(f[i : i + 1], RES) for i in range(7)])
    assert torch.allclose(a, single, atol=1e-6)
    # Different samples give different images.
    assert (a[0] - a[1]).abs().max() > 0.1


@pytest.mark.parametrize("res", [32, 64])
@pytest.mark.parametrize("batch", [1, 7])
def test_render_shape_dtype_range(res, batch):
    img = render(sample_factors(batch, seed=batch), res)
    assert img.shape == (batch, 3, res, res)
    assert img.dtype == torch.float32
    assert float(img.min()) >= -1.0 and float(img.max()) <= 1.0
    assert torch.isfinite(img).all()
    # Uses a good part of the range (dark pupils, white eyes).
    assert float(img.min()) < -0.7 and float(img.max()) > 0.8


def test_render_accepts_float64_and_extreme_values():
    f = torch.cat([_base(1, 0.0), _base(1, 1.0)]).double()
    img = render(f, 32)
    assert img.dtype == torch.float32 and torch.isfinite(img).all()


def test_resolution_independent_geometry():
    f = sample_factors(8, seed=2)
    hi = F.avg_pool2d(render(f, 64), 2)
    lo = render(f, 32)
    assert (hi - lo).abs().mean() < 0.03


def test_hsv_to_rgb_matches_colorsys():
    h = torch.tensor([0.0, 30.0, 95.0, 180.0, 250.0, 359.0])
    out = hsv_to_rgb(h, 0.6, 0.8)
    for i, hv in enumerate(h.tolist()):
        ref = colorsys.hsv_to_rgb(hv / 360.0, 0.6, 0.8)
        assert np.allclose(out[i].numpy(), ref, atol=1e-6)


# --------------------------------------------------------------------------- bad input


def test_bad_inputs():
    good = _base(2)
    with pytest.raises(ValueError):
        render(good[0], RES)  # [F], not [B, F]
    with pytest.raises(ValueError):
        render(torch.full((2, NUM_FACTORS + 1), 0.5), RES)
    with pytest.raises(ValueError):
        render(good.view(1, 2, NUM_FACTORS), RES)
    with pytest.raises(TypeError):
        render(torch.zeros(2, NUM_FACTORS, dtype=torch.int64), RES)
    with pytest.raises(TypeError):
        render(good.numpy(), RES)
    with pytest.raises(ValueError):
        render(good, 15)
    with pytest.raises(TypeError):
        render(good, 32.0)

    i = FACTOR_INDEX["nose_length"]
    bad = good.clone()
    bad[1, i] = 1.5
    with pytest.raises(ValueError, match="nose_length"):
        render(bad, RES)
    bad[1, i] = -0.01
    with pytest.raises(ValueError, match="nose_length"):
        render(bad, RES)
    bad = good.clone()
    bad[0, FACTOR_INDEX["gaze_x"]] = float("nan")
    with pytest.raises(ValueError, match="gaze_x"):
        render(bad, RES)


# --------------------------------------------------------------------------- factor effects

# Where each factor is allowed to change pixels (normalised coordinates).
# The head's outline: a ring between the inner face and the image border.
_OUTLINE = ~((X / 0.40) ** 2 + ((Y + 0.02) / 0.50) ** 2 < 1) & (AX < 0.85) & (Y > -0.85)
REGIONS = {
    "head_width": _OUTLINE,
    "head_height": _OUTLINE,
    "skin_hue": (AX < 0.7) & (Y > -0.65) & (Y < 0.9),
    "eye_spacing": (AX < 0.5) & (Y > -0.5) & (Y < 0.2),
    "eye_size": (AX < 0.5) & (Y > -0.25) & (Y < 0.2),
    "gaze_x": (AX < 0.45) & (Y > -0.25) & (Y < 0.15),
    "brow_height": (AX < 0.45) & (Y > -0.5) & (Y < -0.15),
    "nose_length": (AX < 0.15) & (Y > -0.05) & (Y < 0.4),
    "mouth_width": (AX < 0.45) & (Y > 0.3) & (Y < 0.65),
    "mouth_curvature": (AX < 0.45) & (Y > 0.3) & (Y < 0.65),
    "hair_hue": (Y < -0.35) | (AX > 0.45),
    "hair_length": (AX > 0.45) & (Y > -0.3),
    "fringe_length": (AX < 0.65) & (Y > -0.65) & (Y < -0.35),
    "background_hue": ~((AX < 0.5) & (Y > -0.55) & (Y < 0.6)),
}


# Factors whose change must lie entirely inside their region.
STRICTLY_LOCAL = {
    "eye_spacing",
    "eye_size",
    "gaze_x",
    "brow_height",
    "nose_length",
    "mouth_width",
    "mouth_curvature",
    "hair_length",
    "fringe_length",
}

# Inside of the default face (head ellipse shrunk by ~1.5 px), below the fringe.
_FACE_INTERIOR = ((X / 0.53) ** 2 + ((Y - 0.10) / 0.63) ** 2 < 1) & (Y > -0.35)


# ... and the inside of the smallest head (factors changing the head's own size).
_SMALL_FACE_INTERIOR = ((X / 0.44) ** 2 + ((Y - 0.03) / 0.56) ** 2 < 1) & (Y > -0.35)


@pytest.mark.parametrize(
    "name, interior",
    [
        ("background_hue", _FACE_INTERIOR),
        ("hair_hue", _FACE_INTERIOR),
        ("head_width", _SMALL_FACE_INTERIOR),
        ("head_height", _SMALL_FACE_INTERIOR),
    ],
)
def test_outer_factors_leave_face_interior_untouched(name, interior):
    mask = _change_mask(name, 0.0, 1.0)
    assert int(mask.sum()) > 100
    assert int((mask & interior).sum()) == 0


def test_every_factor_has_a_region():
    assert set(REGIONS) == set(FACTOR_NAMES)


@pytest.mark.parametrize("name", FACTOR_NAMES)
def test_factor_changes_image_locally(name):
    mask = _change_mask(name)
    region = REGIONS[name]
    n_changed = int(mask.sum())
    assert n_changed >= 15, f"{name} barely changes the image ({n_changed} px)"
    inside = int((mask & region).sum()) / n_changed
    need = 1.0 if name in STRICTLY_LOCAL else 0.9
    assert inside >= need, f"{name}: only {inside:.1%} of changed pixels in its region"
    # The region is a real restriction, not (almost) the whole image.
    assert float(region.float().mean()) < 0.75


def _count(name, values, colour_at, tol=0.12, region=None):
    imgs = render(_sweep(name, values), RES)
    counts = []
    for img in imgs:
        m = _near(img, _pixel(img, *colour_at), tol)
        if region is not None:
            m = m & region
        counts.append(int(m.sum()))
    return counts


VALUES = [0.0, 0.25, 0.5, 0.75, 1.0]


def test_nose_pixels_grow_with_nose_length():
    box = (AX < 0.2) & (Y > -0.1) & (Y < 0.4)
    counts = _count("nose_length", VALUES, (0.0, 0.05), region=box)
    assert _strictly_increasing(counts), counts


def test_skin_area_grows_with_head_size():
    for name in ("head_width", "head_height"):
        counts = _count(name, VALUES, (0.4, 0.2))
        assert _strictly_increasing(counts), (name, counts)


def test_eye_white_area_grows_with_eye_size():
    imgs = render(_sweep("eye_size", VALUES), RES)
    counts = [int((img > 0.85).all(0).sum()) for img in imgs]
    assert _strictly_increasing(counts), counts


def test_mouth_pixels_grow_with_mouth_width():
    counts = _count("mouth_width", VALUES, (0.0, 0.45))
    assert _strictly_increasing(counts), counts


def test_hair_pixels_grow_with_hair_and_fringe_length():
    for name in ("hair_length", "fringe_length"):
        counts = _count(name, VALUES, (0.0, -0.66))
        assert _strictly_increasing(counts), (name, counts)


def _centroid(imgs, colour, tol, coord, region=None):
    out = []
    for img in imgs:
        m = _near(img, colour, tol)
        if region is not None:
            m = m & region
        assert m.any()
        out.append(float(coord[m].mean()))
    return out


def test_feature_positions_move_monotonically():
    brow = torch.tensor([0.20, 0.13, 0.10]) * 2 - 1
    pupil = torch.tensor([0.07, 0.07, 0.12]) * 2 - 1
    white = torch.tensor([0.97, 0.97, 0.97]) * 2 - 1
    # Raising the brows moves brow pixels up (smaller y).
    ys = _centroid(render(_sweep("brow_height", VALUES), RES), brow, 0.1, Y)
    assert _strictly_increasing([-v for v in ys]), ys
    # Gaze moves the pupils to the right.
    xs = _centroid(render(_sweep("gaze_x", VALUES), RES), pupil, 0.15, X)
    assert _strictly_increasing(xs), xs
    # Eye spacing moves the eye whites away from the midline.
    xs = _centroid(render(_sweep("eye_spacing", VALUES), RES), white, 0.1, AX)
    assert _strictly_increasing(xs), xs


def test_mouth_curvature_frown_to_smile():
    imgs = render(_sweep("mouth_curvature", VALUES), RES)
    drops = []
    for img in imgs:
        m = _near(img, _pixel(img, 0.0, 0.45), 0.12) & (Y > 0.25)
        centre = float(Y[m & (AX < 0.05)].mean())
        corners = float(Y[m & (AX > 0.12)].mean())
        drops.append(centre - corners)  # > 0: centre below the corners (smile)
    assert drops[0] < -0.03 and drops[-1] > 0.03, drops
    assert _strictly_increasing(drops), drops


def test_hues_move_monotonically():
    for name, at in (
        ("skin_hue", (0.4, 0.2)),
        ("hair_hue", (0.0, -0.66)),
        ("background_hue", (-0.95, -0.95)),
    ):
        imgs = render(_sweep(name, VALUES), RES)
        hues = [_hue_deg(_pixel(img, *at)) for img in imgs]
        assert _strictly_increasing(hues), (name, hues)


DISJOINT_PAIRS = [
    ("nose_length", "background_hue"),
    ("nose_length", "eye_size"),
    ("nose_length", "mouth_width"),
    ("nose_length", "hair_length"),
    ("eye_size", "mouth_width"),
    ("gaze_x", "mouth_curvature"),
    ("eye_size", "brow_height"),
    ("brow_height", "mouth_curvature"),
    ("brow_height", "fringe_length"),
    ("fringe_length", "mouth_width"),
    ("hair_length", "eye_spacing"),
    ("background_hue", "mouth_curvature"),
    ("background_hue", "fringe_length"),
]


def test_different_factors_change_different_pixels():
    masks = {n: _change_mask(n) for n in {a for pair in DISJOINT_PAIRS for a in pair}}
    for a, b in DISJOINT_PAIRS:
        inter = int((masks[a] & masks[b]).sum())
        smaller = min(int(masks[a].sum()), int(masks[b].sum()))
        assert inter <= 0.05 * smaller, (a, b, inter, smaller)


# --------------------------------------------------------------------------- helpers


def test_render_numpy():
    arr = render_numpy(sample_factors(3, seed=0), 32)
    assert arr.shape == (3, 32, 32, 3) and arr.dtype == np.uint8


# --------------------------------------------------------------------------- data set


def test_toyworld_deterministic():
    w1, w2 = ToyWorld(resolution=32, seed=5), ToyWorld(resolution=32, seed=5)
    i1, f1 = w1.sample(4)
    i2, f2 = w2.sample(4)
    assert torch.equal(f1, f2) and torch.equal(i1, i2)
    assert i1.shape == (4, 3, 32, 32) and f1.shape == (4, NUM_FACTORS)
    assert torch.equal(i1, render(f1, 32))
    # Its own generator advances.
    _, f3 = w1.sample(4)
    assert not torch.equal(f1, f3)

    it_a, it_b = w1.batches(3, seed=11), w2.batches(3, seed=11)
    for _ in range(3):
        (ia, fa), (ib, fb) = next(it_a), next(it_b)
        assert torch.equal(fa, fb) and torch.equal(ia, ib)
    fc = next(w1.batches(3, seed=12))[1]
    assert not torch.equal(fc, next(w1.batches(3, seed=11))[1])
    # The default seed of batches() is the world's seed.
    assert torch.equal(next(w1.batches(3))[1], next(ToyWorld(32, seed=5).batches(3))[1])
    with pytest.raises(ValueError):
        ToyWorld(resolution=8)

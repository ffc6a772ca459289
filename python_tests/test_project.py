"""Image loading, the W / W+ projector, noise overrides and direction selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from navcuda.discover import discover
from navcuda.models.stylegan2 import Generator
from navcuda.project import (
    load_image,
    noise_buffers,
    noise_override,
    project,
    select_direction,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------ images
def test_load_image_crops_the_centre_and_resizes(tmp_path):
    img = Image.new("RGB", (60, 20), (0, 255, 0))
    img.paste((255, 0, 0), (20, 0, 40, 20))  # the centre square is red
    img.paste((0, 0, 255), (40, 0, 60, 20))
    img.save(tmp_path / "wide.png")
    x = load_image(tmp_path / "wide.png", 16)
    assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32
    assert torch.allclose(x[0, :, 1:-1, 1:-1], torch.tensor([1.0, -1, -1]).view(3, 1, 1), atol=0.05)
    # Upscaling, greyscale, and transparency composited on white.
    rgba = Image.new("RGBA", (20, 30), (0, 0, 0, 0))
    rgba.save(tmp_path / "clear.png")
    g = load_image(tmp_path / "clear.png", 32, channels=1)
    assert g.shape == (1, 1, 32, 32) and torch.allclose(g, torch.ones_like(g))


def test_load_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png", 16)
    with pytest.raises(ValueError, match="is a directory"):
        load_image(tmp_path, 16)
    (tmp_path / "notes.png").write_text("not an image at all")
    with pytest.raises(ValueError, match=r"notes\.png is not an image file"):
        load_image(tmp_path / "notes.png", 16)
    Image.new("RGB", (40, 40), (9, 9, 9)).save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.png"):
        load_image(tmp_path / "cut.png", 16)
    Image.new("RGB", (40, 8)).save(tmp_path / "thin.png")
    with pytest.raises(ValueError, match=r"thin\.png is 40x8 pixels; at least 16 px"):
        load_image(tmp_path / "thin.png", 16)


def test_load_image_rescales_16_bit_greyscale(tmp_path):
    # Left to right: black, 1/4, mid grey, white, as 16-bit samples.
    levels = np.array([0, 16384, 32768, 65535], dtype=np.uint16)
    grey = np.repeat(np.repeat(levels[None, :], 4, axis=1), 16, axis=0)  # 16x16
    expected = torch.tensor([0, 64, 128, 255], dtype=torch.float32) / 127.5 - 1
    paths = {
        "I;16": tmp_path / "grey16.png",
        "I;16B": tmp_path / "grey16b.tif",
        "I": tmp_path / "grey16.pgm",  # Pillow reads 16-bit PGM as mode "I"
    }
    Image.fromarray(grey).save(paths["I;16"])
    Image.fromarray(grey.astype(">u2")).save(paths["I;16B"])
    Image.fromarray(grey).save(paths["I"])
    for mode, path in paths.items():
        with Image.open(path) as im:
            assert im.mode == mode
        for channels in (1, 3):
            x = load_image(path, 16, channels=channels)
            assert x.shape == (1, channels, 16, 16)
            columns = x[0, :, 0, ::4]  # one pixel per level, no resize happened
            torch.testing.assert_close(
                columns, expected.expand(channels, 4), atol=1e-6, rtol=0, msg=str(path)
            )


def test_load_image_refuses_ambiguous_sample_formats(tmp_path):
    Image.fromarray(np.full((20, 20), 0.5, dtype=np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(
        ValueError, match=r"float\.tif has Pillow mode 'F' \(32-bit floating.*convert it to 8-bit"
    ):
        load_image(tmp_path / "float.tif", 16)
    Image.fromarray(np.full((20, 20), 70000, dtype=np.int32)).save(tmp_path / "int32.tif")
    with pytest.raises(ValueError, match=r"int32\.tif has Pillow mode 'I' \(32-bit integer"):
        load_image(tmp_path / "int32.tif", 16, channels=1)


# ------------------------------------------------------------------------------ noise
def test_noise_override_swaps_and_restores(tiny_generator):
    g = tiny_generator
    w = g.mapping(torch.randn(1, g.config.z_dim))
    before = {k: v.clone() for k, v in noise_buffers(g).items()}
    assert list(before) == [f"noise_{i}" for i in range(len(before))]
    ref = g.synthesis(w)
    zero = {k: torch.zeros_like(v) for k, v in before.items()}
    with noise_override(g, zero):
        assert torch.allclose(g.synthesis(w), g.synthesis(w, noise_mode="none"), atol=1e-6)
    assert torch.equal(g.synthesis(w), ref)
    with pytest.raises(RuntimeError), noise_override(g, zero):
        raise RuntimeError("restored anyway")
    for k, v in noise_buffers(g).items():
        assert torch.equal(v, before[k])
    with pytest.raises(ValueError, match="must have shape"):
        with noise_override(g, {"noise_0": torch.zeros(1, 1, 3, 3)}):
            pass
    with pytest.raises(KeyError, match="no noise buffer"):
        with noise_override(g, {"noise_99": torch.zeros(1)}):
            pass


# ------------------------------------------------------------------------------ projection
@pytest.fixture
def noiseless_generator(tiny_config):
    """Tiny generator without noise inputs (strength 0), so a sample is exactly reachable."""
    torch.manual_seed(0)
    g = Generator(tiny_config()).eval()
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("bias") and "modulation" not in name:
                p.normal_(0, 0.1)
    g.update_w_avg(256)
    return g


def test_projection_recovers_a_sample_in_w_plus(noiseless_generator):
    g = noiseless_generator
    with torch.no_grad():
        w = g.mapping(torch.randn(1, g.config.z_dim, generator=torch.Generator().manual_seed(5)))
        target = g.synthesis(w)
    params = {k: v.clone() for k, v in g.state_dict().items()}
    proj = project(g, target, steps=300, mode="w+", w_std_samples=1000, seed=1, progress=False)
    assert proj.ws.shape == (1, g.num_ws, g.config.w_dim) and proj.mode == "w+"
    assert len(proj.history) == 300 and len(proj.losses) == 300
    rms0 = proj.history[0]["mse"] ** 0.5  # at step 0, w = w_avg (+ a little latent noise)
    rms = (proj.image - target).square().mean().sqrt().item()
    # Measured: rms0 ~0.92, rms ~0.07 (images span [-1, 1]+, std ~1.0).
    assert rms0 > 0.5
    assert rms < 0.12 and rms < 0.15 * rms0, (rms0, rms)
    # The projection renders the same image again; the model itself is untouched.
    assert torch.allclose(proj.render(g), proj.image, atol=1e-5)
    for k, v in g.state_dict().items():
        assert torch.equal(v, params[k]), k
    assert all(p.requires_grad for p in g.parameters())
    # Optimised noise is renormalised after every step (zero mean, unit variance).
    for v in proj.noise.values():
        assert abs(v.mean().item()) < 1e-4 and abs(v.square().mean().item() - 1) < 1e-3


def test_projection_w_mode_with_a_metric(tiny_generator):
    g = tiny_generator
    target = torch.zeros(1, 3, 16, 16)
    calls = []

    def metric(a, b):
        calls.append(a.shape)
        return (a - b).abs().flatten(1).mean(1)

    proj = project(g, target, steps=4, mode="w", metric=metric, mse_weight=0.0, w_std_samples=64)
    assert proj.ws.shape == (1, g.config.w_dim) and calls == [(1, 3, 16, 16)] * 4
    h = proj.history[-1]
    assert h["metric"] == h["metric"] and h["noise_reg"] > 0  # finite, regularised
    assert proj.history[0]["lr"] == 0.0 and proj.history[2]["lr"] > 0  # the ramp-up
    with pytest.raises(ValueError, match=r"target must have shape \[1, 3, 16, 16\]"):
        project(g, torch.zeros(1, 3, 8, 8), steps=1)
    with pytest.raises(ValueError, match="mode"):
        project(g, target, steps=1, mode="z")
    with pytest.raises(ValueError, match="nothing to optimise"):
        project(g, target, steps=1, mse_weight=0)


# ------------------------------------------------------------------------------ directions
def test_select_direction(tiny_generator):
    ds = discover(tiny_generator, 3, method="svd", k=3)
    ds.names = ["Smile", None, "7"]
    assert select_direction(ds, "SMILE").meta["set_index"] == 0
    assert select_direction(ds, "1").meta["set_index"] == 1
    assert select_direction(ds, -1).meta["set_index"] == 2
    assert select_direction(ds, "7").meta["set_index"] == 2  # a name wins over an index
    with pytest.raises(KeyError, match="known names: 7, Smile"):
        select_direction(ds, "frown")
    with pytest.raises(KeyError, match=r"out of range: the set has 3 directions \(0..2\)"):
        select_direction(ds, "5")


def test_project_world_renders_then_edit_moves_the_named_factor():
    """Toy-world faces the generator never saw are projected (W, 150 steps) with the bundled
    model; the bundled "mouth width" and "nose length" directions, applied to the projections at
    -1 and +1 recommended amplitude, move their own factor more than any other (summed over three
    faces, as the factor scores of the named set are measured).

    Measured: the named factor takes 36-41 % of the total change. At 2 amplitudes the edits leave
    the range where they are clean (mouth width drifts into mouth curvature), which is why the
    named set's amplitudes are what the CLI multiplies."""
    from navcuda.metrics.factor_regressor import load_factor_regressor
    from navcuda.models.default import load_default, load_default_directions
    from navcuda.toyworld import FACTOR_NAMES, render, sample_factors

    g = load_default()
    reg = load_factor_regressor()
    targets = render(sample_factors(3, seed=2024), resolution=64)
    projs = [project(g, targets[i : i + 1], steps=150, mode="w", w_std_samples=2000, seed=0,
                     progress=False) for i in range(3)]  # fmt: skip
    for i, p in enumerate(projs):
        rms = (p.image - targets[i : i + 1]).square().mean().sqrt().item()
        assert rms < 0.18, rms  # measured 0.10-0.11: recognisably the same face
    ds = load_default_directions()
    for name in ("mouth width", "nose length"):
        d, j = ds.by_name(name), FACTOR_NAMES.index(name.replace(" ", "_"))
        with torch.no_grad():
            change = sum(
                reg.predict_raw(p.render(g, d, d.amplitude))[0]
                - reg.predict_raw(p.render(g, d, -d.amplitude))[0]
                for p in projs
            )
        assert int(change.abs().argmax()) == j, (name, change.tolist())
        assert float(change[j]) > 0.3  # positive t increases the named factor

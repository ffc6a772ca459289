"""The studio's model side (:mod:`navcuda.studio.session`): states, rendering through recipes,
named errors, exports (no browser)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from navcuda.discover import discover
from navcuda.models.stylegan2 import Generator
from navcuda.recipe import DirectionSource, Recipe, RecipeModelError, render_recipe
from navcuda.studio import (
    ExportError,
    History,
    PhotoError,
    SliderRangeError,
    Studio,
    StudioError,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def studio(tiny_generator, tmp_path, svd_file):
    src = DirectionSource.from_file(svd_file([20.0, float("nan"), 40.0]))
    return Studio(tiny_generator, [src], tmp_path / "exports", projection_steps=2)


def test_sliders_and_states(studio):
    assert [s.label for s in studio.sliders] == ["sv0", "sv1", "sv2"]
    assert [s.relative for s in studio.sliders] == [True, False, True]
    assert studio.sliders[0].limit == 5.0 and studio.sliders[1].limit > 0
    s0 = studio.initial(seed=4)
    s1 = studio.update(s0, [1.0, 0.0, -0.5])
    recipe = studio.recipe(s1)
    assert [(t.name, t.t) for t in recipe.terms] == [("sv0", 20.0), ("sv2", -20.0)]
    edited, original = studio.render(s1), studio.render(s1, original=True)
    assert edited.dtype == np.uint8 and edited.shape == (16, 16, 3)
    assert np.abs(edited.astype(int) - original).mean() > 0.5
    assert np.array_equal(original, studio.render(s0))  # no edit: the sample itself


def test_history_undo_and_reset(studio):
    s0 = studio.initial(seed=4)
    h0 = History.start(s0)
    assert len(h0) == 1 and h0.current is s0
    assert h0.undo() is h0  # nothing to undo: the first state stays
    s1 = studio.update(s0, [1.0, 0.0, -0.5])
    s2 = studio.update(s1, seed=7)
    h2 = h0.push(s1).push(s2)
    assert [len(h0), len(h2)] == [1, 3] and h2.current is s2  # immutable: h0 unchanged
    assert h2.undo().current is s1 and h2.undo().undo().current is s0
    assert h2.undo().undo().undo().current is s0
    # Reset: the same input with no edit, pushed (so it can be undone).
    r = h2.reset()
    assert len(r) == 4 and r.current.values == (0.0, 0.0, 0.0)
    assert (r.current.seed, r.current.truncation, r.current.latent) == (7, s2.truncation, None)
    assert r.undo().current is s2
    assert np.array_equal(studio.render(r.current), studio.render(r.current, original=True))
    # The oldest states are forgotten beyond the limit; undo stops at the oldest kept.
    h = History.start(s0, limit=3)
    for v in (1.0, 2.0, 3.0, 4.0):
        h = h.push(studio.update(h.current, [v, 0.0, 0.0]))
    assert [st.values[0] for st in h.states] == [2.0, 3.0, 4.0]
    assert h.undo().undo().undo().current.values[0] == 2.0
    with pytest.raises(ValueError, match="at least one state"):
        History(())


def test_out_of_range_and_bad_values_are_named_errors(studio):
    s0 = studio.initial()
    with pytest.raises(SliderRangeError, match=r"takes values in \[-5, 5\]"):
        studio.update(s0, [5.5, 0, 0])
    with pytest.raises(SliderRangeError, match="not a number"):
        studio.update(s0, ["x", 0, 0])
    with pytest.raises(SliderRangeError, match="expected 3 slider values"):
        studio.update(s0, [0, 0])
    with pytest.raises(StudioError, match="seed"):
        studio.update(s0, seed=-1)
    with pytest.raises(StudioError, match="unconditional"):
        studio.update(s0, label=1)
    with pytest.raises(StudioError, match="truncation"):
        studio.update(s0, truncation=float("nan"))


def test_photos_recipes_and_exports(studio, tiny_generator, tmp_path, tiny_config):
    photo = tmp_path / "p.png"
    Image.fromarray(np.full((20, 20, 3), 120, np.uint8)).save(photo)
    state = studio.update(studio.project_photo(photo, studio.initial(), progress=False), [1, 0, 0])
    assert state.latent is not None and state.latent.source == "p.png"
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(PhotoError, match="not an image file"):
        studio.project_photo(text, state)
    # Exports: the recipe reproduces the PNG exactly; GIF and MP4 sweep the edit.
    png = studio.export(state, "png")
    rec = studio.export(state, "recipe")
    again = render_recipe(tiny_generator, Recipe.load(rec), studio.sources)
    assert np.array_equal(np.asarray(Image.open(png)), studio.render(state))
    from navcuda.rendering import to_uint8

    assert np.array_equal(np.asarray(Image.open(png)), to_uint8(again[0]))
    gif = Image.open(studio.export(state, "gif"))
    assert gif.n_frames == 2 * 9 - 2
    assert studio.export(state, "mp4").stat().st_size > 0
    assert sorted(p.suffix for p in studio.export_dir.iterdir()) == [
        ".gif", ".json", ".mp4", ".png",
    ]  # fmt: skip
    sweep = studio.sweep(state)
    assert sweep.shape == (1, 9, 3, 16, 16)
    # The recipe loads back into a state with the same image.
    loaded = studio.load_recipe(rec)
    assert np.array_equal(studio.render(loaded), studio.render(state))
    # Another model's recipe, an export folder that is a file: named errors, nothing written.
    torch.manual_seed(3)
    other = Studio(Generator(tiny_config()).eval(), studio.sources, tmp_path / "x")
    with pytest.raises(RecipeModelError):
        other.load_recipe(rec)
    (tmp_path / "file").write_text("x")
    blocked = Studio(tiny_generator, studio.sources, tmp_path / "file" / "sub")
    with pytest.raises(ExportError, match="cannot export"):
        blocked.export(state, "png")
    with pytest.raises(StudioError, match="unknown export"):
        studio.export(state, "bmp")
    assert json.loads(rec.read_text())["input"]["kind"] == "latent"


def test_export_into_a_read_only_folder_is_a_named_error(studio, tiny_generator, read_only_folder):
    ro = Studio(tiny_generator, studio.sources, read_only_folder)
    state = ro.update(ro.initial(), [1.0, 0.0, 0.0])
    for kind in ("png", "recipe", "gif", "mp4"):
        with pytest.raises(ExportError, match=f"cannot export to {read_only_folder}: cannot wr"):
            ro.export(state, kind)
    assert list(read_only_folder.iterdir()) == []  # nothing half-written


def test_studio_command_refuses_bad_input_before_serving(tmp_path, capsys, monkeypatch):
    import navcuda.studio.app as app
    from navcuda.cli import main

    monkeypatch.setattr(app, "launch", lambda *a, **k: pytest.fail("the server started"))
    (tmp_path / "afile").write_text("x")
    assert main(["studio", "--export-dir", str(tmp_path / "afile")]) == 2
    assert "it is a file, not a folder" in capsys.readouterr().err
    assert main(["studio", str(tmp_path / "missing.nav")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["studio", "--checkpoint", str(tmp_path / "g.safetensors")]) == 2
    assert "direction sets" in capsys.readouterr().err


def test_greyscale_png_export_equals_the_cli_file(tmp_path, tiny_config):
    from navcuda.cli import main
    from navcuda.models.checkpoints import save_generator

    torch.manual_seed(1)
    g = Generator(tiny_config(img_channels=1)).eval()
    ckpt = save_generator(g, tmp_path / "grey.safetensors")
    ds = discover(g, 3, method="svd", k=2, calibrate=False)
    ds.amplitudes = torch.tensor([20.0, 30.0], dtype=torch.float64)
    src = DirectionSource.of(ds, str(ds.save(tmp_path / "grey.nav")))
    studio = Studio(g, [src], tmp_path / "exports", model_source=str(ckpt))
    state = studio.update(studio.initial(seed=2), [1.5, -1.0])
    png, rec = studio.export(state, "png"), studio.export(state, "recipe")
    out = tmp_path / "cli.png"
    assert main(["edit", "--recipe", str(rec), "-o", str(out)]) == 0
    assert Image.open(png).mode == "L"  # greyscale, as the model draws it
    assert png.read_bytes() == out.read_bytes()  # the same file, bit for bit
    shown = studio.render(state)  # the UI shows it in RGB: the same grey in every channel
    assert np.array_equal(shown, np.repeat(np.asarray(Image.open(png))[..., None], 3, axis=-1))

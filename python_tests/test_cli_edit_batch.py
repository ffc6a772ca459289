"""``navcuda edit`` with several directions, recipes (bit for bit), and batches (seed ranges,
folders and globs of photos; one output per input, a contact sheet, resumable)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import navcuda.batch_edit as batch_edit
from navcuda.cli import main
from navcuda.models.checkpoints import save_generator
from navcuda.models.stylegan2 import Generator
from navcuda.rendering import save_grid

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def setup(tmp_path, tiny_generator, svd_file):
    ckpt = str(save_generator(tiny_generator, tmp_path / "g.safetensors"))
    return ["--directions", str(svd_file([20.0, 30.0, 40.0])), "--checkpoint", ckpt]


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_several_directions_and_the_recipe_reproduce_bit_for_bit(tmp_path, setup, capsys):
    out, rec = tmp_path / "e.png", tmp_path / "r.json"
    argv = ["edit", "--seed", "3", "--direction", "sv0=1.5", "--direction", "sv2=-1", *setup]
    assert main([*argv, "-o", str(out), "--save-recipe", str(rec)]) == 0
    msg = capsys.readouterr().out
    assert "'sv0', t = 30 = 1.5 x amplitude 20" in msg and "'sv2', t = -40" in msg
    terms = json.loads(rec.read_text())["directions"]
    assert [(t["name"], t["t"]) for t in terms] == [("sv0", 30.0), ("sv2", -40.0)]
    again = tmp_path / "again.png"
    assert main(["edit", "--recipe", str(rec), "-o", str(again), "--checkpoint", setup[3]]) == 0
    edited = _pixels(out)[2:18, 20:36]  # the right panel of sample | edited
    assert np.array_equal(_pixels(again), edited)
    assert np.abs(_pixels(out)[2:18, 2:18].astype(int) - edited).mean() > 1  # it does edit
    # The recipe's model is its checkpoint: found without --checkpoint.
    third = tmp_path / "third.png"
    assert main(["edit", "--recipe", str(rec), "-o", str(third)]) == 0
    assert np.array_equal(_pixels(third), edited)


def test_a_recipe_of_another_model_is_refused(tmp_path, setup, tiny_config, capsys):
    rec = tmp_path / "r.json"
    argv = ["edit", "--seed", "0", "--direction", "sv0=1", *setup, "-o", str(tmp_path / "a.png")]
    assert main([*argv, "--save-recipe", str(rec)]) == 0
    torch.manual_seed(7)
    other = save_generator(Generator(tiny_config()).eval(), tmp_path / "other.safetensors")
    out = tmp_path / "b.png"
    assert main(["edit", "--recipe", str(rec), "--checkpoint", str(other), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "this recipe was made on model" in err and "--allow-other-model" in err
    assert not out.exists()
    # --allow-other-model: applied to the other model (a fine-tuned one, say), with a warning;
    # the image is that of the recipe's seed and directions on the other model.
    cmd = ["edit", "--recipe", str(rec), "--checkpoint", str(other), "--allow-other-model"]
    assert main([*cmd, "-o", str(out)]) == 0
    assert "warning: the recipe was made on model" in capsys.readouterr().err
    direct = tmp_path / "direct.png"
    assert main([*argv[:-3], str(other), "--allow-other-model", "-o", str(direct)]) == 0
    assert np.array_equal(_pixels(out), _pixels(direct)[2:18, 20:36])
    assert not np.array_equal(_pixels(out), _pixels(tmp_path / "a.png")[2:18, 20:36])
    # A model whose layer has another shape: the set does not fit it, a named error.
    narrow = Generator(tiny_config(channel_max=8)).eval()
    narrow = save_generator(narrow, tmp_path / "narrow.safetensors")
    cmd[4] = str(narrow)
    assert main([*cmd, "-o", str(tmp_path / "c.png")]) == 2
    assert "but the set was made for" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    assert main(["edit", "--recipe", str(tmp_path / "bad.json"), "-o", str(out)]) == 2
    assert "not a navcuda edit recipe" in capsys.readouterr().err
    assert main(["edit", "--recipe", str(rec), "--seed", "1", "-o", str(out)]) == 2
    assert "drop the others" in capsys.readouterr().err


def test_a_seed_range_streams_one_output_per_seed_and_resumes(tmp_path, setup, capsys):
    out = tmp_path / "batch"
    argv = ["edit", "--seed", "0-3", "--direction", "sv1=2", "--direction", "sv0=-1", *setup]
    assert main([*argv, "-o", str(out)]) == 0
    assert "4 inputs: wrote 4 edited images" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == ["contact_sheet.png"] + [
        f"seed{s:04d}.{ext}" for s in range(4) for ext in ("png", "recipe.json")
    ]
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.size[0] > 2 * 2 * 16 and sheet.size[1] > 2 * 16  # 2 x 2 pairs
    # Each output is its recipe's image, bit for bit.
    again = tmp_path / "again.png"
    assert main(["edit", "--recipe", str(out / "seed0002.recipe.json"), "-o", str(again)]) == 0
    assert np.array_equal(_pixels(again), _pixels(out / "seed0002.png"))
    # Interrupted after seed 1 (its recipe, written last, is missing): the rerun does seed 1.
    (out / "seed0001.recipe.json").unlink()
    before = (out / "seed0000.png").stat().st_mtime_ns
    assert main([*argv, "-o", str(out)]) == 0
    msg = capsys.readouterr().out
    assert "wrote 1 edited images" in msg and "3 done before" in msg
    assert (out / "seed0001.recipe.json").is_file()
    assert (out / "seed0000.png").stat().st_mtime_ns == before
    # Another edit redoes them all.
    assert main(["edit", "--seed", "0-3", "--direction", "sv1=1", *setup, "-o", str(out)]) == 0
    assert "wrote 4 edited images" in capsys.readouterr().out


def test_a_folder_of_photos_projects_each_once(
    tmp_path, tiny_generator, setup, capsys, monkeypatch
):
    photos = tmp_path / "photos"
    photos.mkdir()
    with torch.no_grad():
        samples = tiny_generator(torch.randn(2, 32, generator=torch.Generator().manual_seed(0)))
    for i in range(2):
        save_grid(samples[i : i + 1], photos / f"p{i}.png", padding=0)
    (photos / "notes.txt").write_text("not a photo")  # not an image suffix: ignored
    out = tmp_path / "edits"
    argv = ["edit", str(photos), "--steps", "3", "--metric", "none", *setup, "-o", str(out)]
    assert main([*argv, "--direction", "sv0=1"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["contact_sheet.png", "p0.png", "p1.png"]
    recipe = json.loads((out / "p0.recipe.json").read_text())
    assert recipe["input"]["kind"] == "latent" and recipe["extra"]["projection"]["steps"] == 3
    # Other directions: the projections are reused (no projection runs).
    monkeypatch.setattr(batch_edit, "project", lambda *a, **k: pytest.fail("projected again"))
    capsys.readouterr()
    assert main([*argv, "--direction", "sv1=-1"]) == 0
    assert "wrote 2 edited images" in capsys.readouterr().out
    again = tmp_path / "again.png"
    assert main(["edit", "--recipe", str(out / "p1.recipe.json"), "-o", str(again)]) == 0
    assert np.array_equal(_pixels(again), _pixels(out / "p1.png"))
    # A glob works too; a file that is not an image is refused before any work.
    bad = tmp_path / "bad.png"
    bad.write_text("text")
    code = main(["edit", str(photos / "*.png"), str(bad), "--direction", "sv0=1", *setup,
                 "-o", str(tmp_path / "never")])  # fmt: skip
    assert code == 2
    assert "bad.png is not an image file" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_direction_specs(setup, tmp_path, capsys):
    from navcuda.cli.edit import parse_direction

    assert parse_direction("eye size=2", 1.0) == ("eye size", 2.0)
    assert parse_direction("eye size", 1.5) == ("eye size", 1.5)
    assert parse_direction("a=b", 1.0) == ("a=b", 1.0)
    with pytest.raises(ValueError, match="finite"):
        parse_direction("sv0=nan", 1.0)
    argv = ["edit", "--seed", "0", *setup, "-o", str(tmp_path / "x.png")]
    assert main(argv) == 2
    assert "at least one --direction" in capsys.readouterr().err
    assert main([*argv, "--direction", "sv0=inf"]) == 2
    assert "finite" in capsys.readouterr().err


def test_outputs_into_a_read_only_folder_are_refused(tmp_path, setup, read_only_folder, capsys):
    rec = tmp_path / "r.json"
    argv = ["edit", "--direction", "sv0=1", *setup]
    first = [*argv, "--seed", "0", "-o", str(tmp_path / "a.png")]
    assert main([*first, "--save-recipe", str(rec)]) == 0
    capsys.readouterr()
    for cmd in (
        [*argv, "--seed", "0", "-o", str(read_only_folder / "e.png")],  # one input
        [*argv, "--seed", "0-2", "-o", str(read_only_folder)],  # a batch
        [*argv, "--seed", "0-2", "-o", str(read_only_folder / "sub")],
        ["edit", "--recipe", str(rec), "-o", str(read_only_folder / "r.png")],
    ):
        assert main(cmd) == 2
        assert "no write permission in" in capsys.readouterr().err
    assert list(read_only_folder.iterdir()) == []

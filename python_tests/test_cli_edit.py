"""``navcuda edit`` (photo projection and generated samples) and the names round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from navcuda.cli import main
from navcuda.discover import discover
from navcuda.gallery import set_digest
from navcuda.io.directions import DirectionSet
from navcuda.models.checkpoints import save_generator
from navcuda.rendering import save_grid

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def setup(tmp_path, tiny_generator):
    ckpt = str(save_generator(tiny_generator, tmp_path / "g.safetensors"))
    ds = discover(tiny_generator, 3, method="svd", k=3)
    dirs = ds.save(tmp_path / "dirs.nav")
    return ckpt, dirs, ds


def test_edit_a_photo(tmp_path, tiny_generator, setup, capsys):
    ckpt, dirs, _ = setup
    with torch.no_grad():
        sample = tiny_generator(torch.randn(1, tiny_generator.config.z_dim))
    photo = save_grid(sample, tmp_path / "photo.png", padding=0)  # 16x16 PNG
    Image.open(photo).resize((40, 30)).save(photo)  # not square, not the model's size
    out = tmp_path / "out" / "edit.png"
    args = ["edit", str(photo), "--directions", str(dirs), "--direction", "1", "--t", "-2"]
    assert main([*args, "--checkpoint", ckpt, "--steps", "8", "-o", str(out)]) == 0
    msg = capsys.readouterr().out
    assert "input | reconstruction | edited" in msg and str(out) in msg
    assert "'sv1'" in msg and "-2 x amplitude" in msg
    assert Image.open(out).size == (3 * 18 + 2, 18 + 2)  # three 16 px panels, 2 px padding
    assert not list(out.parent.glob(".*.tmp"))  # written atomically


def test_edit_a_sample_by_seed(tmp_path, tiny_generator, setup, capsys):
    ckpt, dirs, ds = setup
    out = tmp_path / "seed.png"
    base = ["edit", "--seed", "3", "--directions", str(dirs), "--checkpoint", ckpt]
    assert main([*base, "--direction", "sv2", "--t", "1.5", "-o", str(out)]) == 0
    assert "seed 3 | edited" in capsys.readouterr().out
    img = torch.from_numpy(np.array(Image.open(out))).float()
    assert img.shape == (20, 2 * 18 + 2, 3)
    left, right = img[2:18, 2:18], img[2:18, 20:36]
    assert (left - right).abs().mean() > 1.0  # the edit changes the image
    # --absolute takes t as a norm: t = 0 gives the sample back.
    out0 = tmp_path / "zero.png"
    assert main([*base, "--direction", "0", "--t", "0", "--absolute", "-o", str(out0)]) == 0
    z = np.asarray(Image.open(out0)).astype(float)
    assert abs(z[2:18, 2:18] - z[2:18, 20:36]).max() == 0
    # Errors: neither/both inputs, unknown direction, unreadable photo.
    assert main([*base[:1], "--directions", str(dirs), "--direction", "0"]) == 2
    assert "either an image" in capsys.readouterr().err
    assert main([*base, "--direction", "frown"]) == 2
    assert "known names: sv0, sv1, sv2" in capsys.readouterr().err
    assert main([*base, "--direction", "7"]) == 2
    assert "out of range" in capsys.readouterr().err
    (tmp_path / "x.png").write_text("text")
    assert main(["edit", str(tmp_path / "x.png"), *base[3:], "--direction", "0"]) == 2
    assert "x.png is not an image file" in capsys.readouterr().err


def test_names_round_trip_to_edit(tmp_path, setup, capsys):
    ckpt, dirs, ds = setup
    names = tmp_path / "names.json"
    exported = {  # the shape the gallery's "Export names" button downloads
        "set": {"file": "dirs.nav", "directions": set_digest(ds), "count": 3},
        "names": {
            "0": {"name": "sv0", "mark": None},
            "1": {"name": "Big Smile", "mark": "good"},
            "2": {"name": None, "mark": "bad"},
        },
    }
    names.write_text(json.dumps(exported))
    assert main(["name", str(dirs), str(names)]) == 0
    assert "2 of 3 directions named, 1 marked good, 1 bad" in capsys.readouterr().out
    named = DirectionSet.load(dirs)
    assert named.names == ["sv0", "Big Smile", None]
    assert named.extra["marks"] == {"1": "good", "2": "bad"}
    out = tmp_path / "smile.png"
    args = ["edit", "--seed", "0", "--directions", str(dirs), "--checkpoint", ckpt]
    assert main([*args, "--direction", "big smile", "-o", str(out)]) == 0
    assert "'Big Smile'" in capsys.readouterr().out and out.is_file()
    assert main([*args, "--direction", "frown"]) == 2
    assert "known names: Big Smile, sv0" in capsys.readouterr().err
    # Invalid names files are rejected with the reason and leave the set as it was.
    names.write_text("{")
    assert main(["name", str(dirs), str(names)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    names.write_text(json.dumps({"names": {"3": {"name": "x"}}}))
    assert main(["name", str(dirs), str(names)]) == 2
    assert "unknown direction index 3: the set has 3 directions" in capsys.readouterr().err
    assert DirectionSet.load(dirs).names == ["sv0", "Big Smile", None]


def test_name_auto_names_by_factors(tmp_path, capsys):
    """`navcuda name --auto` on the bundled model: singular directions named after the
    ground-truth factor each moves most; then `edit` applies one by that name."""
    svd = tmp_path / "svd.nav"
    args = ["discover", "--method", "svd", "--layer", "convs.3", "-k", "12", "-o", str(svd)]
    assert main(args) == 0
    named = tmp_path / "named.nav"
    assert main(["name", str(svd), "--auto", "--samples", "6", "-o", str(named)]) == 0
    out = capsys.readouterr().out
    ds = DirectionSet.load(named)
    assert 1 <= len(ds) <= 12 and all(n is not None for n in ds.names)
    assert all(info["disentanglement"] >= 0.25 for info in ds.extra["factor_scores"])
    assert all(info["named"] for info in ds.extra["factor_scores"])
    assert ds.names[0] in out
    assert f"{len(ds)} of 12 directions named after a factor, {12 - len(ds)} dropped" in out
    # --keep-unnamed: every direction kept, the unnamed ones under their names, and said so
    kept = tmp_path / "kept.nav"
    args = ["name", str(svd), "--auto", "--samples", "6", "--keep-unnamed", "-o", str(kept)]
    assert main(args) == 0
    out = capsys.readouterr().out
    all_dirs = DirectionSet.load(kept)
    flags = [info["named"] for info in all_dirs.extra["factor_scores"]]
    assert len(all_dirs) == 12 and sum(flags) == len(ds)
    assert [n for n, f in zip(all_dirs.names, flags, strict=True) if f] == ds.names
    assert [n for n, f in zip(all_dirs.names, flags, strict=True) if not f] == [
        f"sv{i}" for i, f in enumerate(flags) if not f
    ]
    assert f"{len(ds)} of 12 directions named after a factor, {12 - len(ds)} kept" in out
    assert out.count("(top factor ") == 12 - len(ds)
    png = tmp_path / "edit.png"
    code = main(["edit", "--seed", "1", "--directions", str(named), "--direction", ds.names[0],
                 "-o", str(png)])  # fmt: skip
    assert code == 0 and png.stat().st_size > 0
    assert main(["name", str(svd)]) == 2  # neither names.json nor --auto
    capsys.readouterr()
    too_strict = ["name", str(svd), "--auto", "--samples", "6", "--min-disentanglement", "1"]
    assert main([*too_strict, "-o", str(tmp_path / "none.nav")]) == 2
    assert "no direction reaches disentanglement 1 (the best reaches" in capsys.readouterr().err
    assert not (tmp_path / "none.nav").exists()


def test_name_fit_writes_clean_combinations(tmp_path, capsys, setup):
    """`navcuda name --fit` on the bundled model (one factor, few latents): the fitted direction
    is named after its factor and `edit` applies it by that name; a generator that is not a
    toy-world model, or two modes at once, are refused with a named error."""
    svd = tmp_path / "svd.nav"
    assert (
        main(["discover", "--method", "svd", "--layer", "convs.3", "-k", "64", "-o", str(svd)]) == 0
    )
    named = tmp_path / "named.nav"
    args = ["name", str(svd), "--fit", "--factors", "nose length", "--samples", "48"]
    assert main([*args, "-o", str(named)]) == 0
    out = capsys.readouterr().out
    ds = DirectionSet.load(named)
    assert ds.names == ["nose length"] and ds.method == "svd+fit"
    assert "nose length      clean shift" in out and "1 of 1 factors" in out
    png = tmp_path / "nose.png"
    assert main(["edit", "--seed", "1", "--directions", str(named), "--direction", "nose length",
                 "--t", "2", "-o", str(png)]) == 0  # fmt: skip
    assert png.stat().st_size > 0
    ckpt, dirs, _ = setup  # a tiny generator: not the toy world
    assert (
        main(["name", str(dirs), "--fit", "--checkpoint", ckpt, "-o", str(tmp_path / "x.nav")]) == 2
    )
    assert "--fit measures the toy world's factors" in capsys.readouterr().err
    assert main(["name", str(svd), "--fit", "--auto"]) == 2
    assert "give one of a names.json file, --auto or --fit" in capsys.readouterr().err

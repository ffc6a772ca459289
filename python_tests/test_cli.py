"""The navcuda command line, end to end in a temporary folder."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image

from navcuda.cli import main, parse_range, parse_seeds
from navcuda.io.directions import DirectionSet
from navcuda.models.checkpoints import save_generator


@pytest.fixture
def ckpt(tmp_path, tiny_generator):
    return str(save_generator(tiny_generator, tmp_path / "g.safetensors"))


def test_parsers():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("1,5,9") == [1, 5, 9]
    assert parse_seeds("0-1,7") == [0, 1, 7]
    assert parse_range("-1:1:3") == [-1.0, 0.0, 1.0]
    assert parse_range("2,0.5") == [2.0, 0.5]
    for bad in ("3-1", "a", "-2"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_seeds(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_range("1:2")


def test_version(capsys):
    import navcuda

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"navcuda {navcuda.__version__}"


def test_info(ckpt, capsys):
    assert main(["info", ckpt]) == 0
    out = capsys.readouterr().out
    assert "convs.3" in out and "[16, 16, 3, 3]" in out and "not shiftable" in out
    assert main(["info", "--build"]) == 0
    assert "cuda_compiled" in json.loads(capsys.readouterr().out)
    assert main(["info", "--selftest", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "bias_act" in out and "PASS" in out and "FAIL" not in out
    assert main(["info", ckpt, "--build"]) == 2
    assert "not a checkpoint" in capsys.readouterr().err


def test_discover_then_render(tmp_path, ckpt, capsys):
    dirs = tmp_path / "dirs.nav"
    args = ["discover", "--method", "svd", "--layer", "3", "-k", "3", "-o", str(dirs)]
    assert main([*args, "--checkpoint", ckpt, "--param", "target_rms=0.05"]) == 0
    ds = DirectionSet.load(dirs)
    assert len(ds) == 3 and ds.hparams["target_rms"] == 0.05
    out = tmp_path / "strips"
    rargs = ["render", str(dirs), "-o", str(out), "--seeds", "0-1", "--t", "-1:1:3", "--gif"]
    assert main([*rargs, "--checkpoint", ckpt]) == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["00_sv0.png", "01_sv1.png", "02_sv2.png"]
    w, h = Image.open(pngs[0]).size
    assert (w, h) == (3 * 18 + 2, 2 * 18 + 2)  # 3 shifts x 2 seeds of 16 px, 2 px padding
    gif = Image.open(out / "00_sv0.gif")
    assert gif.n_frames == 4  # forth and back over 3 shifts
    assert "wrote" in capsys.readouterr().out


def test_render_only_keeps_labels_distinct(tmp_path, ckpt, tiny_generator):
    """A set (e.g. an older file) naming direction 2 "svd0" while direction 0 has no name: with
    ``--only`` direction 0 is rendered under its own label, not a second "svd0"."""
    from navcuda.discover import discover

    ds = discover(tiny_generator, 3, method="svd", k=3, calibrate=False)
    ds.names = [None, "sv1", "svd0"]
    dirs = ds.save(tmp_path / "dirs.nav")
    out = tmp_path / "strips"
    args = ["render", str(dirs), "-o", str(out), "--seeds", "0", "--t", "0,1", "--only", "2,0"]
    assert main([*args, "--checkpoint", ckpt]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["00_svd0.png", "01_svd0__unnamed_.png"]


def test_errors_are_reported_not_raised(tmp_path, ckpt, capsys):
    assert main(["render", str(tmp_path / "missing.nav"), "--checkpoint", ckpt]) == 2
    assert "direction set not found" in capsys.readouterr().err
    assert main(["render", str(tmp_path), "--checkpoint", ckpt, "-o", str(tmp_path / "o")]) == 2
    assert "is a folder; give the .nav file in it" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err
    assert main(["discover", "--layer", "99", "--checkpoint", ckpt, "-o", str(tmp_path / "x")]) == 2
    assert "no layer" in capsys.readouterr().err


def test_render_refuses_other_model(tmp_path, ckpt, tiny_generator, capsys):
    import copy

    import torch

    dirs = tmp_path / "dirs.nav"
    assert (
        main(
            [
                "discover",
                "-k",
                "2",
                "-o",
                str(dirs),
                "--checkpoint",
                ckpt,
                "--param",
                "calibrate=false",
            ]
        )
        == 0
    )
    other = copy.deepcopy(tiny_generator)
    with torch.no_grad():
        other.convs[0].conv.weight.add_(0.1)
    other_ckpt = str(save_generator(other, tmp_path / "other.safetensors"))
    assert main(["render", str(dirs), "--checkpoint", other_ckpt, "-o", str(tmp_path / "o")]) == 2
    assert "allow-other-model" in capsys.readouterr().err
    assert (
        main(
            [
                "render",
                str(dirs),
                "--checkpoint",
                other_ckpt,
                "-o",
                str(tmp_path / "o"),
                "--allow-other-model",
            ]
        )
        == 0
    )


def test_evaluate_locality_and_reproduce(tmp_path, ckpt):
    dirs = tmp_path / "dirs.nav"
    assert main(["discover", "-k", "2", "-o", str(dirs), "--checkpoint", ckpt]) == 0
    out = tmp_path / "ev"
    common = [str(dirs), "--checkpoint", ckpt, "-o", str(out), "--n-z", "2"]
    assert main(["evaluate", "locality", *common, "--n-t", "2"]) == 0
    report = json.loads((out / "locality.json").read_text())
    assert [d["name"] for d in report["directions"]] == ["sv0", "sv1"]
    assert (out / "locality.png").stat().st_size > 1000
    assert main(["evaluate", "reproduce", *common, "--steps", "3", "--only", "0"]) == 0
    rows = json.loads((out / "reproduce.json").read_text())["rows"]
    assert {r["space"] for r in rows} == {"z", "w", "w+", "activations"}
    assert (out / "reproduce.png").stat().st_size > 1000


def test_discover_spectrum_then_hybrid(tmp_path, ckpt, capsys):
    spec = tmp_path / "spec.nav"
    common = ["--checkpoint", ckpt, "--layer", "convs.3", "--metric", "pixel"]
    args = ["discover", "--method", "spectrum", "-k", "2", "-o", str(spec), *common,
            "--param", "n_latents=2", "--param", "max_iters=4",
            "--param", "resize=null"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "eigenvalues" in out and "metric pixel" in out
    ds = DirectionSet.load(spec)
    assert ds.method == "spectrum" and ds.metric == "pixel" and ds.extra["iterations"] <= 4
    hyb = tmp_path / "hyb.nav"
    args = ["discover", "--method", "hybrid", "-k", "2", "-o", str(hyb), *common,
            "--eigenvectors", str(spec), "--param", "steps=2", "--param", "batch_size=2",
            "--param", "reconstructor_size=32"]  # fmt: skip
    assert main(args) == 0
    h = DirectionSet.load(hyb)
    assert h.method == "hybrid" and h.extra["basis"]["size"] == 2
    # --eigenvectors belongs to hybrid only
    bad = ["discover", "--method", "svd", "-o", str(tmp_path / "x.nav"), "--checkpoint", ckpt]
    assert main([*bad, "--eigenvectors", str(spec)]) == 2


def test_train_resume_and_export(tmp_path, capsys):
    """Two steps, resumed for one more, then the EMA generator exported and loadable; every run
    ends with a sample grid (whatever --sample-every says) and the closing line names it."""
    from navcuda.models.checkpoints import load_generator

    run = tmp_path / "run"
    common = ["train", "-o", str(run), "--resolution", "32", "--batch-size", "2"]
    assert main([*common, "--steps", "2", "--sample-every", "1000"]) == 0
    out = capsys.readouterr().out
    assert "step 2:" in out and f"samples in {run / 'samples'}" in out
    first = sorted((run / "samples").iterdir())
    assert first
    assert main([*common, "--steps", "1", "--sample-every", "1"]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "step 3:" in out and f"samples in {run / 'samples'}" in out
    assert len(list((run / "samples").iterdir())) > len(first)
    exported = tmp_path / "g.safetensors"
    assert main([*common, "--export", str(exported)]) == 0
    assert load_generator(exported).config.resolution == 32


@pytest.mark.parametrize(
    "argv,message",
    [
        (["render", "x.nav", "--truncation", "nan"], "expected a finite number, got 'nan'"),
        (["render", "x.nav", "--device", "cuda:7"], "cuda:7"),
        (["render", "x.nav", "--device", "foo"], "unknown device 'foo'"),
        (["gallery", "x.nav", "--port", "99999"], "port number in [0, 65535]"),
        (["name", "x.nav", "--auto", "--min-disentanglement", "nan"], "a number in [0, 1]"),
        (["name", "x.nav", "--auto", "--samples=-1"], "an integer >= 1"),
        (["train", "--steps=-1"], "an integer >= 0"),
        (["train", "--minutes", "nan"], "a finite number > 0"),
        (["train", "--sample-every", "0"], "an integer >= 1"),
        (["evaluate", "layers", "--threshold", "nan"], "a number in [0, 1]"),
        (["evaluate", "reproduce", "x.nav", "--steps", "0"], "an integer >= 1"),
        (["evaluate", "realism", "x.nav", "--t", "1:2:0"], "bad range"),
        (["edit", "--seed=-1", "--direction", "0"], "an integer >= 0"),
        (["render", "x.nav", "--seeds", "99999999999999999999"], "seeds must lie in"),
    ],
)
def test_bad_options_are_refused_before_any_work(argv, message, capsys):
    if "cuda:7" in argv and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 CUDA devices")
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_outputs_that_cannot_be_written_are_refused_before_any_work(
    tmp_path, ckpt, capsys, monkeypatch
):
    import navcuda.cli.commands as commands

    monkeypatch.setattr(commands, "load_generator_of", lambda *a, **k: pytest.fail("work started"))
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    common = ["--checkpoint", ckpt]
    cases = [
        (["discover", "-o", str(tmp_path / "adir")], "it is a folder; give a file name"),
        (["discover", "-o", ""], "it is a folder"),
        (["discover", "-o", str(tmp_path / "afile" / "x.nav")], "afile' is a file, not a folder"),
        (["demo", "-o", str(tmp_path / "afile")], "it is a file, not a folder"),
    ]
    for argv, message in cases:
        assert main([*argv, *common]) == 2, argv
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile", "g.safetensors"]


def test_interrupts_and_os_errors_are_one_line(tmp_path, monkeypatch, capsys):
    import navcuda.cli.parser as parser

    def interrupted(args):
        raise KeyboardInterrupt

    def disk_full(args):
        raise OSError(28, "No space left on device", "out/x.nav")

    for fn, code, message in [
        (interrupted, 130, "navcuda info: interrupted"),
        (disk_full, 2, "navcuda info: error: No space left on device: out/x.nav"),
    ]:
        monkeypatch.setattr(parser, "cmd_info", fn)
        assert main(["info"]) == code
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_json_reports_are_strict_json(tmp_path):
    from navcuda.cli.options import parse_hparams, write_json

    path = write_json(tmp_path / "r.json", {"a": float("nan"), "b": [1.0, float("inf")]})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None]}
    assert parse_hparams(["target_rms=nan", "x=inf", "y=abc"])[1] == ("x", float("inf"))


def test_gallery_refuses_a_busy_port_before_rendering(tmp_path, ckpt, capsys, monkeypatch):
    import socket

    import navcuda.cli.commands as commands

    monkeypatch.setattr(
        commands, "load_generator_of", lambda *a, **k: pytest.fail("rendering started")
    )
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = ["gallery", "x.nav", "-o", str(tmp_path / "g"), "--serve", "--port", str(port)]
        assert main(argv) == 2
    assert f"cannot serve on 127.0.0.1:{port}" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["render", "discover", "train", "evaluate"])
def test_help_shows_defaults(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "(default: cpu)" in out  # every command has --device
    assert "(default: None)" not in out and "(default: False)" not in out


def test_seed_ranges_are_lazy():
    """``--seeds 0-10000000000`` parses in no memory; indexing and slicing follow the list."""
    from navcuda.cli.options import parse_seeds

    huge = parse_seeds("0-10000000000,5")
    assert len(huge) == 10_000_000_002
    assert huge[0] == 0 and huge[10_000_000_000] == 10_000_000_000 and huge[-1] == 5
    assert huge[9_999_999_999:10_000_000_002] == [9_999_999_999, 10_000_000_000, 5]
    small = parse_seeds("3,0-2,7")
    assert list(small) == [3, 0, 1, 2, 7] and small == [3, 0, 1, 2, 7]
    assert small[1:4] == [0, 1, 2] and small[-2] == 2
    with pytest.raises(IndexError):
        small[5]
    # compared as runs of consecutive seeds, never listed (this would take hours element-wise)
    assert parse_seeds("0-10000000000") == parse_seeds("0-5000000000,5000000001-10000000000")
    assert parse_seeds("0-10000000000") != parse_seeds("1-10000000001")


def test_render_refuses_what_does_not_fit_unless_yes(tmp_path, ckpt, tiny_generator, capsys):
    """A seed range whose strips exceed the free disk is refused before anything is rendered,
    with the estimate; ``--labels`` draws names and t on the strips."""
    from navcuda.discover import discover

    dirs = discover(tiny_generator, 3, method="svd", k=1, calibrate=False).save(tmp_path / "d.nav")
    out = tmp_path / "strips"
    base = ["render", str(dirs), "-o", str(out), "--checkpoint", ckpt, "--t", "-1,1"]
    assert main([*base, "--seeds", "0-10000000000"]) == 2
    err = capsys.readouterr().err
    assert "not started: 20,000,000,002 images" in err and "--yes" in err and "free in" in err
    assert not out.exists() or not any(out.iterdir())
    gal = ["gallery", str(dirs), "-o", str(tmp_path / "g"), "--checkpoint", ckpt]
    assert main([*gal, "--seeds", "0-10000000000"]) == 2
    assert "not started" in capsys.readouterr().err
    assert main([*base, "--seeds", "0-1"]) == 0
    plain = np.asarray(Image.open(out / "00_sv0.png"))
    assert main([*base, "--seeds", "0-1", "--labels"]) == 0
    labelled = np.asarray(Image.open(out / "00_sv0.png"))
    assert labelled.shape[0] > plain.shape[0]  # a caption row above the strip


def test_demo_output_is_ignored_by_git(tmp_path, ckpt):
    out = tmp_path / "demo"
    args = ["demo", "-o", str(out), "--checkpoint", ckpt, "-k", "1", "--seeds", "0", "--t", "0,1"]
    assert main(args) == 0
    assert (out / ".gitignore").read_text().splitlines()[-1] == "*"
    assert (out / "directions.nav").exists()
    assert not (out / "named").exists()  # another model: the bundled named set does not apply


def test_demo_of_the_bundled_model_also_renders_its_named_edits(tmp_path, capsys):
    from navcuda.models.default import load_default_directions

    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "-k", "1", "--seeds", "0", "--t", "-2,2"]) == 0
    names = load_default_directions().names
    strips = sorted(p.name for p in (out / "named").glob("*.png"))
    assert len(strips) == len(names) and all(n.replace(" ", "_") in "".join(strips) for n in names)
    assert len(list((out / "named").glob("*.gif"))) == len(names)
    assert "bundled named edits" in capsys.readouterr().out

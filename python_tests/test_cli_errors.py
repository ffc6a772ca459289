"""Bad input never reaches a CLI user as a traceback: every command, every kind of bad input
that applies to it (missing file, corrupt file, wrong layer, bad numbers, out-of-range seed or
class, bad --param, bad --model) exits with code 2 and a one-line error, before heavy work."""

from __future__ import annotations

import textwrap

import pytest
import torch

from navcuda.cli import main
from navcuda.discover import discover
from navcuda.io.directions import DirectionSet
from navcuda.models.checkpoints import save_generator
from navcuda.models.stylegan2 import Generator, GeneratorConfig

pytestmark = pytest.mark.usefixtures("one_thread")

CONDITIONAL = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 8 * 4 * 4)
            self.embed = nn.Embedding(3, 8 * 4 * 4)
            self.conv = nn.Conv2d(8, 3, 3, padding=1)

        def forward(self, z, label):
            return torch.tanh(self.conv((self.fc(z) + self.embed(label)).view(-1, 8, 4, 4)))

    def sampler(n, seed, label=None):
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, 6, generator=gen)
        label = torch.randint(3, (n,), generator=gen) if label is None else label
        return {"z": z, "label": label}

    def make():
        torch.manual_seed(0)
        return {"module": Net(), "sample": sampler, "num_classes": 3, "latent": "z"}

    def make_bad():
        return 42
    """
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny checkpoint, an SVD and a GANSpace set of it (uncalibrated: fast), corrupt files,
    and an importable module of generator factories (a conditional one, a bad one)."""
    root = tmp_path_factory.mktemp("cli_errors")
    torch.manual_seed(0)
    cfg = GeneratorConfig(resolution=16, z_dim=32, w_dim=32, n_mlp=2, channel_base=256,
                          channel_max=32)  # fmt: skip
    g = Generator(cfg).eval()
    g.update_w_avg(64)
    ckpt = save_generator(g, root / "g.safetensors")
    svd = discover(g, 3, method="svd", k=3, calibrate=False).save(root / "svd.nav")
    gs = discover(g, method="ganspace", k=3, n_samples=64, calibrate=False).save(root / "gs.nav")
    for name in ("bad.nav", "bad.safetensors", "bad.png", "bad.json", "run/checkpoint.pt"):
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(b"garbage, not what the name says")
    (root / "empty_run").mkdir()
    (root / "navcuda_cli_error_models.py").write_text(CONDITIONAL)
    return {"ckpt": str(ckpt), "svd": str(svd), "gs": str(gs), "root": root,
            "big": str(2**64), "cond": "navcuda_cli_error_models:make"}  # fmt: skip


# (command, kind, argv); {ckpt} {svd} {gs} {root} {big} {cond} are filled in from ``files``.
CASES = [
    ("info", "missing file", "info {root}/missing.pt"),
    ("info", "corrupt file", "info {root}/bad.safetensors"),
    ("info", "bad --model", "info --model navcuda_no_such_module:make"),
    ("info", "bad --model", "info --model navcuda_cli_error_models:make_bad"),
    ("info", "bad --model", "info --model no_colon"),
    ("info", "bad device", "info --selftest --device cuda:99"),
    ("demo", "missing file", "demo -o {root}/d --checkpoint {root}/missing.pt"),
    ("demo", "corrupt file", "demo -o {root}/d --checkpoint {root}/bad.safetensors"),
    ("demo", "wrong layer", "demo -o {root}/d --checkpoint {ckpt} --layer 99"),
    ("demo", "bad numbers", "demo -o {root}/d --checkpoint {ckpt} -k 0"),
    ("demo", "bad numbers", "demo -o {root}/d --checkpoint {ckpt} --t nan"),
    ("demo", "out-of-range seed", "demo -o {root}/d --checkpoint {ckpt} --seed {big}"),
    ("demo", "out-of-range seed", "demo -o {root}/d --checkpoint {ckpt} --seeds {big}"),
    ("demo", "out-of-range class", "demo -o {root}/d --checkpoint {ckpt} --class 5"),
    ("demo", "out-of-range class", "demo -o {root}/d --model {cond} --layer conv --class 7"),
    ("demo", "bad --model", "demo -o {root}/d --model navcuda_no_such_module:make"),
    ("discover", "missing file", "discover -o {root}/x.nav --checkpoint {root}/missing.pt"),
    ("discover", "corrupt file", "discover -o {root}/x.nav --checkpoint {root}/bad.safetensors"),
    (
        "discover",
        "missing file",
        "discover -o {root}/x.nav --checkpoint {ckpt} --method hybrid "
        "--eigenvectors {root}/missing.nav",
    ),
    (
        "discover",
        "corrupt file",
        "discover -o {root}/x.nav --checkpoint {ckpt} --method hybrid "
        "--eigenvectors {root}/bad.nav",
    ),
    ("discover", "wrong layer", "discover -o {root}/x.nav --checkpoint {ckpt} --layer 99"),
    ("discover", "wrong layer", "discover -o {root}/x.nav --checkpoint {ckpt} --layer convs.99"),
    (
        "discover",
        "wrong layer",
        "discover -o {root}/x.nav --checkpoint {ckpt} --method sefa --layer nope",
    ),
    ("discover", "bad numbers", "discover -o {root}/x.nav --checkpoint {ckpt} -k 0"),
    (
        "discover",
        "bad numbers",
        "discover -o {root}/x.nav --checkpoint {ckpt} -k 1 --method optimize",
    ),
    ("discover", "out-of-range seed", "discover -o {root}/x.nav --checkpoint {ckpt} --seed {big}"),
    ("discover", "out-of-range seed", "discover -o {root}/x.nav --checkpoint {ckpt} --seed -1"),
    (
        "discover",
        "out-of-range seed",
        "discover -o {root}/x.nav --checkpoint {ckpt} --method optimize --seed 99999999999999999",
    ),
    ("discover", "out-of-range class", "discover -o {root}/x.nav --checkpoint {ckpt} --class 3"),
    (
        "discover",
        "out-of-range class",
        "discover -o {root}/x.nav --model {cond} --layer conv --class 7",
    ),
    ("discover", "bad --param", "discover -o {root}/x.nav --checkpoint {ckpt} --param stepz=3"),
    ("discover", "bad --param", "discover -o {root}/x.nav --checkpoint {ckpt} --param noequals"),
    ("discover", "bad --param", "discover -o {root}/x.nav --checkpoint {ckpt} --param k=3"),
    (
        "discover",
        "bad --param",
        "discover -o {root}/x.nav --checkpoint {ckpt} --param target_rms=nan",
    ),
    (
        "discover",
        "bad --param",
        "discover -o {root}/x.nav --checkpoint {ckpt} --method optimize --param stepz=3",
    ),
    (
        "discover",
        "bad --param",
        "discover -o {root}/x.nav --checkpoint {ckpt} --method optimize --param steps=abc",
    ),
    (
        "discover",
        "bad --param",
        "discover -o {root}/x.nav --checkpoint {ckpt} --method optimize --param t_min_rel=5",
    ),
    (
        "discover",
        "bad --param",
        "discover -o {root}/x.nav --checkpoint {ckpt} --method spectrum --param eps=abc",
    ),
    (
        "discover",
        "bad --param",
        "discover -o {root}/x.nav --checkpoint {ckpt} --method spectrum --param solver=nope",
    ),
    (
        "discover",
        "bad --param",
        "discover -o {root}/x.nav --checkpoint {ckpt} --method spectrum --metric nope",
    ),
    (
        "discover",
        "bad --param",
        "discover -o {root}/x.nav --checkpoint {ckpt} --method hybrid --param spectrum_n_latent=2",
    ),
    (
        "discover",
        "bad --param",
        "discover -o {root}/x.nav --checkpoint {ckpt} --method hybrid --param spectrum_eps=-1",
    ),
    (
        "discover",
        "bad --param",
        "discover -o {root}/x.nav --checkpoint {ckpt} --method ganspace --param n_samples=abc",
    ),
    (
        "discover",
        "bad --param",
        "discover -o {root}/x.nav --checkpoint {ckpt} --method sefa --param layers=3.5",
    ),
    ("discover", "bad --model", "discover -o {root}/x.nav --model navcuda_no_such_module:make"),
    ("render", "missing file", "render {root}/missing.nav -o {root}/r --checkpoint {ckpt}"),
    ("render", "corrupt file", "render {root}/bad.nav -o {root}/r --checkpoint {ckpt}"),
    ("render", "corrupt file", "render {svd} -o {root}/r --checkpoint {root}/bad.safetensors"),
    ("render", "wrong layer", "render {svd} -o {root}/r --model {cond}"),
    ("render", "bad numbers", "render {gs} -o {root}/r --checkpoint {ckpt} --t nan"),
    ("render", "bad numbers", "render {gs} -o {root}/r --checkpoint {ckpt} --t 1:2:0"),
    ("render", "bad numbers", "render {svd} -o {root}/r --checkpoint {ckpt} --truncation inf"),
    ("render", "bad numbers", "render {svd} -o {root}/r --checkpoint {ckpt} --only 9"),
    ("render", "out-of-range seed", "render {svd} -o {root}/r --checkpoint {ckpt} --seeds {big}"),
    ("render", "out-of-range class", "render {svd} -o {root}/r --checkpoint {ckpt} --class 1"),
    ("render", "bad --model", "render {svd} -o {root}/r --model navcuda_cli_error_models:nope"),
    ("gallery", "missing file", "gallery {root}/missing.nav -o {root}/g --checkpoint {ckpt}"),
    ("gallery", "corrupt file", "gallery {root}/bad.nav -o {root}/g --checkpoint {ckpt}"),
    (
        "gallery",
        "missing file",
        "gallery {svd} -o {root}/g --checkpoint {ckpt} --scores {root}/missing.json",
    ),
    (
        "gallery",
        "corrupt file",
        "gallery {svd} -o {root}/g --checkpoint {ckpt} --scores {root}/bad.json",
    ),
    ("gallery", "bad numbers", "gallery {svd} -o {root}/g --checkpoint {ckpt} --t inf"),
    ("gallery", "bad numbers", "gallery {svd} -o {root}/g --checkpoint {ckpt} --port 99999"),
    ("gallery", "out-of-range seed", "gallery {svd} -o {root}/g --checkpoint {ckpt} --seeds {big}"),
    ("gallery", "out-of-range class", "gallery {svd} -o {root}/g --checkpoint {ckpt} --class 1"),
    ("gallery", "bad --model", "gallery {svd} -o {root}/g --model navcuda_no_such_module:make"),
    ("name", "missing file", "name {root}/missing.nav {root}/names.json"),
    ("name", "corrupt file", "name {root}/bad.nav {root}/names.json"),
    ("name", "missing file", "name {svd} {root}/missing.json -o {root}/n.nav"),
    ("name", "corrupt file", "name {svd} {root}/bad.json -o {root}/n.nav"),
    ("name", "bad numbers", "name {svd} --auto -o {root}/n.nav --samples 0"),
    ("name", "bad numbers", "name {svd} --auto -o {root}/n.nav --min-disentanglement 2"),
    ("name", "out-of-range seed", "name {svd} --auto -o {root}/n.nav --seed {big}"),
    ("name", "wrong model", "name {svd} --auto -o {root}/n.nav --checkpoint {ckpt}"),
    ("name", "bad --model", "name {svd} --auto -o {root}/n.nav --model no_colon"),
    (
        "edit",
        "missing file",
        "edit --seed 0 --directions {root}/missing.nav --direction 0 "
        "--checkpoint {ckpt} -o {root}/e.png",
    ),
    (
        "edit",
        "corrupt file",
        "edit --seed 0 --directions {root}/bad.nav --direction 0 "
        "--checkpoint {ckpt} -o {root}/e.png",
    ),
    (
        "edit",
        "missing file",
        "edit {root}/missing.png --directions {svd} --direction 0 "
        "--checkpoint {ckpt} -o {root}/e.png",
    ),
    (
        "edit",
        "corrupt file",
        "edit {root}/bad.png --directions {svd} --direction 0 --checkpoint {ckpt} -o {root}/e.png",
    ),
    (
        "edit",
        "bad numbers",
        "edit --seed 0 --directions {gs} --direction 0 --t nan --checkpoint {ckpt} -o {root}/e.png",
    ),
    (
        "edit",
        "bad numbers",
        "edit --seed 0 --directions {svd} --direction 9 --checkpoint {ckpt} -o {root}/e.png",
    ),
    (
        "edit",
        "bad numbers",
        "edit --seed 0 --directions {svd} --direction nope --checkpoint {ckpt} -o {root}/e.png",
    ),
    (
        "edit",
        "bad numbers",
        "edit {root}/bad.png --directions {svd} --direction 0 --steps 0 "
        "--checkpoint {ckpt} -o {root}/e.png",
    ),
    (
        "edit",
        "out-of-range seed",
        "edit --seed {big} --directions {svd} --direction 0 --checkpoint {ckpt} -o {root}/e.png",
    ),
    (
        "edit",
        "out-of-range seed",
        "edit {root}/bad.png --directions {svd} --direction 0 "
        "--projection-seed -1 --checkpoint {ckpt} -o {root}/e.png",
    ),
    (
        "edit",
        "out-of-range class",
        "edit --seed 0 --directions {svd} --direction 0 --class 1 "
        "--checkpoint {ckpt} -o {root}/e.png",
    ),
    (
        "edit",
        "bad --model",
        "edit --seed 0 --directions {svd} --direction 0 "
        "--model navcuda_no_such_module:make -o {root}/e.png",
    ),
    (
        "evaluate locality",
        "missing file",
        "evaluate locality {root}/missing.nav -o {root}/ev --checkpoint {ckpt}",
    ),
    (
        "evaluate locality",
        "corrupt file",
        "evaluate locality {root}/bad.nav -o {root}/ev --checkpoint {ckpt}",
    ),
    ("evaluate locality", "missing file", "evaluate locality -o {root}/ev --checkpoint {ckpt}"),
    (
        "evaluate locality",
        "bad numbers",
        "evaluate locality {svd} -o {root}/ev --checkpoint {ckpt} --n-z 0",
    ),
    (
        "evaluate locality",
        "bad numbers",
        "evaluate locality {svd} -o {root}/ev --checkpoint {ckpt} --n-t -1",
    ),
    (
        "evaluate locality",
        "bad numbers",
        "evaluate locality {svd} -o {root}/ev --checkpoint {ckpt} --only 9",
    ),
    (
        "evaluate locality",
        "out-of-range seed",
        "evaluate locality {svd} -o {root}/ev --checkpoint {ckpt} --seed {big}",
    ),
    (
        "evaluate locality",
        "out-of-range class",
        "evaluate locality {svd} -o {root}/ev --checkpoint {ckpt} --class 1",
    ),
    (
        "evaluate locality",
        "bad --param",
        "evaluate locality {svd} -o {root}/ev --checkpoint {ckpt} --param steps=3",
    ),
    ("evaluate locality", "bad --model", "evaluate locality {svd} -o {root}/ev --model no_colon"),
    (
        "evaluate reproduce",
        "bad numbers",
        "evaluate reproduce {svd} -o {root}/ev --checkpoint {ckpt} --n-z 0",
    ),
    (
        "evaluate reproduce",
        "bad numbers",
        "evaluate reproduce {svd} -o {root}/ev --checkpoint {ckpt} --t-rel nan",
    ),
    (
        "evaluate reproduce",
        "bad numbers",
        "evaluate reproduce {svd} -o {root}/ev --checkpoint {ckpt} --steps 0",
    ),
    (
        "evaluate reproduce",
        "bad --param",
        "evaluate reproduce {svd} -o {root}/ev --checkpoint {ckpt} --metric nope",
    ),
    (
        "evaluate reproduce",
        "corrupt file",
        "evaluate reproduce {root}/bad.nav -o {root}/ev --checkpoint {ckpt}",
    ),
    (
        "evaluate realism",
        "missing file",
        "evaluate realism {svd} -o {root}/ev --checkpoint "
        "{ckpt} --inception {root}/missing.pt --real {root}",
    ),
    (
        "evaluate realism",
        "missing file",
        "evaluate realism {svd} -o {root}/ev --checkpoint {ckpt} --baseline {root}/missing.nav",
    ),
    (
        "evaluate realism",
        "bad numbers",
        "evaluate realism {svd} -o {root}/ev --checkpoint {ckpt} --t nan",
    ),
    (
        "evaluate realism",
        "bad numbers",
        "evaluate realism {svd} -o {root}/ev --checkpoint {ckpt} --n-real 0",
    ),
    ("evaluate realism", "wrong model", "evaluate realism {svd} -o {root}/ev --checkpoint {ckpt}"),
    ("evaluate layers", "bad --param", "evaluate layers -o {root}/ev --param stepz=1"),
    (
        "evaluate layers",
        "bad --param",
        "evaluate layers -o {root}/ev --method optimize --param lr=-1",
    ),
    ("evaluate layers", "bad --param", "evaluate layers -o {root}/ev --method nope"),
    ("evaluate layers", "bad numbers", "evaluate layers -o {root}/ev -k 0"),
    ("evaluate layers", "bad numbers", "evaluate layers -o {root}/ev --n-z 0"),
    ("evaluate layers", "out-of-range seed", "evaluate layers -o {root}/ev --seed {big}"),
    ("evaluate layers", "wrong model", "evaluate layers -o {root}/ev --checkpoint {ckpt}"),
    (
        "evaluate layers",
        "corrupt file",
        "evaluate layers -o {root}/ev --checkpoint {root}/bad.safetensors",
    ),
    ("evaluate table", "bad --param", "evaluate table -o {root}/ev --param svd.stepz=1"),
    ("evaluate table", "bad --param", "evaluate table -o {root}/ev --param stepz=1"),
    ("evaluate table", "bad --param", "evaluate table -o {root}/ev --param nope.k=1"),
    ("evaluate table", "bad --param", "evaluate table -o {root}/ev --methods svd,nope"),
    ("evaluate table", "bad --param", "evaluate table -o {root}/ev --set svd"),
    ("evaluate table", "bad numbers", "evaluate table -o {root}/ev --train-steps -1"),
    ("evaluate table", "bad numbers", "evaluate table -o {root}/ev --spectrum-latents 0"),
    ("evaluate table", "wrong model", "evaluate table -o {root}/ev --checkpoint {ckpt}"),
    ("evaluate table", "bad --model", "evaluate table -o {root}/ev --model no_colon"),
    ("train", "bad numbers", "train -o {root}/t --resolution 7 --steps 1"),
    ("train", "bad numbers", "train -o {root}/t --steps -1"),
    ("train", "bad numbers", "train -o {root}/t --batch-size 0"),
    ("train", "bad numbers", "train -o {root}/t --minutes nan"),
    ("train", "bad numbers", "train -o {root}/t --kernel-init 0"),
    ("train", "out-of-range seed", "train -o {root}/t --seed {big}"),
    ("train", "corrupt file", "train -o {root}/run --steps 1 --resolution 32"),
    ("train", "missing file", "train -o {root}/empty_run --export {root}/g2.safetensors"),
    ("train", "wrong output", "train -o {svd} --steps 1"),
]


@pytest.mark.parametrize(
    "command, kind, argv", CASES, ids=[f"{c}: {k}: {a.split(' ', 2)[-1]}" for c, k, a in CASES]
)
def test_bad_input_exits_2_with_one_error_line(files, monkeypatch, capsys, command, kind, argv):
    monkeypatch.syspath_prepend(str(files["root"]))
    args = argv.format(**files).split()
    try:
        code = main(args)
    except SystemExit as exc:  # argparse refusing an option
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, f"{command} ({kind}) exited {code}:\n{err}"
    assert "Traceback" not in err
    assert f"navcuda {command.split()[0]}: error: " in err or "navcuda: error: " in err, err


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_nan_shifts_of_a_latent_set_are_refused(files, capsys):
    """Issue 22, item 1: ``edit``/``render`` with ``--t nan`` on a GANSpace set wrote an
    all-black panel or strips; they exit 2 with a message and write nothing."""
    root = files["root"]
    edit = ["edit", "--seed", "0", "--directions", files["gs"], "--direction", "0"]
    assert _run([*edit, "--t", "nan", "--checkpoint", files["ckpt"], "-o", f"{root}/e.png"]) == 2
    assert "--t: expected a finite number, got 'nan'" in capsys.readouterr().err
    render = ["render", files["gs"], "--checkpoint", files["ckpt"], "-o", f"{root}/nan"]
    for t in ("nan", "-inf:1:3", "0,nan"):
        assert _run([*render, f"--t={t}"]) == 2
        assert "every value must be a finite number" in capsys.readouterr().err
    assert not (root / "e.png").exists() and not (root / "nan").exists()


@pytest.mark.parametrize("method, cap, where", [("svd", 16, "convs.3"), ("ganspace", 32, "latent")])
def test_k_beyond_what_the_method_finds_is_capped_with_a_note(files, capsys, method, cap, where):
    """Issue 22, item 10: ``-k 100000`` was capped at the rank without a word."""
    out = files["root"] / f"capped_{method}.nav"
    args = ["discover", "--method", method, "-k", "100000", "--checkpoint", files["ckpt"]]
    assert main([*args, "-o", str(out), "--param", "calibrate=false"]) == 0
    err = capsys.readouterr().err
    assert f"note: -k 100000 is more than {method} can find in" in err and where in err
    assert f"is {cap}): discovering {cap}" in err
    assert len(DirectionSet.load(out)) == cap


def test_huge_shifts_render_with_one_warning_naming_the_factor(files, capsys):
    """Issue 22, item 10: ``--t 1e30`` rendered noise without a warning. The command says it
    once (not once per batch, not as a Python warning) and renders all the same."""
    from navcuda.models.checkpoints import load_generator

    g = load_generator(files["ckpt"])
    norm = float(g.kernel("convs.3").detach().double().norm())
    out = files["root"] / "huge"
    args = ["render", files["svd"], "--checkpoint", files["ckpt"], "-o", str(out), "--seeds", "0"]
    assert main([*args, "--t", "-1e30,1e30", "--absolute"]) == 0
    err = capsys.readouterr().err
    assert "navcuda render: warning: --t up to 1e+30 shifts direction" in err
    assert f"{1e30 / norm:.3g} x the norm of layer convs.3's kernel" in err
    assert err.count("warning") == 1 and "LargeShiftWarning" not in err
    assert len(list(out.glob("*.png"))) == 3
    assert main([*args, "--t", "-2:2:3", "--absolute"]) == 0  # an edit-sized shift: no word
    assert "warning" not in capsys.readouterr().err
    edit = ["edit", "--seed", "0", "--directions", files["gs"], "--direction", "0", "--t", "1e30"]
    assert main([*edit, "--checkpoint", files["ckpt"], "-o", str(out / "e.png")]) == 0
    err = capsys.readouterr().err
    assert "navcuda edit: warning: --t up to 1e+30" in err and "typical norm of a latent" in err


@pytest.mark.parametrize("method", ["svd", "spectrum", "optimize", "hybrid", "ganspace", "sefa"])
def test_list_params_prints_the_declared_table(method, capsys):
    from navcuda.discover.params import table

    assert main(["discover", "--method", method, "--list-params"]) == 0
    out = capsys.readouterr().out
    assert "name" in out and "default" in out and "rule" in out and "meaning" in out
    for name, p in table(method).items():
        line = next(line for line in out.splitlines() if line.split()[:1] == [name])
        assert p.help in line
    if method == "spectrum":
        assert "n_latents" in out and " 512 " in out

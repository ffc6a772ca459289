"""The CLI on any generator: --model package.module:factory and --class."""

from __future__ import annotations

import textwrap

import pytest
import torch

from navcuda import cli
from navcuda.io.directions import DirectionSet

FACTORIES = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, classes=0):
            super().__init__()
            self.fc = nn.Linear(6, 8 * 4 * 4)
            self.embed = nn.Embedding(max(classes, 1), 8 * 4 * 4)
            self.up = nn.ConvTranspose2d(8, 8, 4, 2, 1)
            self.conv = nn.Conv2d(8, 3, 3, padding=1)

        def forward(self, z, label=None):
            x = self.fc(z) + (0 if label is None else self.embed(label))
            return torch.tanh(self.conv(torch.relu(self.up(x.view(-1, 8, 4, 4)))))

    def sampler(n, seed, label=None):
        z = torch.randn(n, 6, generator=torch.Generator().manual_seed(seed))
        return {"z": z} if label is None else {"z": z, "label": label}

    def cond_sampler(n, seed, label=None):
        if label is None:
            label = torch.randint(3, (n,), generator=torch.Generator().manual_seed(seed + 1))
        return {**sampler(n, seed), "label": label}

    def make_pair():
        torch.manual_seed(0)
        return Net(), sampler

    def make_conditional(checkpoint=None):
        torch.manual_seed(0)
        net = Net(classes=3)
        if checkpoint is not None:
            net.load_state_dict(torch.load(checkpoint, weights_only=True))
        return {"module": net, "sample": cond_sampler, "num_classes": 3, "latent": "z"}

    def make_bad():
        return 42
    """
)


@pytest.fixture
def models(tmp_path, monkeypatch):
    (tmp_path / "navcuda_cli_models.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "navcuda_cli_models"


def test_discover_render_edit_with_a_factory(models, tmp_path, capsys):
    spec = f"{models}:make_pair"
    assert cli.main(["info", "--model", spec]) == 0
    out = capsys.readouterr().out
    assert f"wrapped:{spec}" in out and "conv_transpose2d" in out and "conv" in out
    nav = tmp_path / "dirs.nav"
    args = ["discover", "--model", spec, "--layer", "up", "-k", "3", "-o", str(nav)]
    assert cli.main(args) == 0
    ds = DirectionSet.load(nav)
    assert ds.model == f"wrapped:{spec}" and ds.layer == "up" and len(ds) == 3
    strips = tmp_path / "strips"
    args = ["render", str(nav), "--model", spec, "-o", str(strips), "--seeds", "0-1"]
    assert cli.main(args) == 0
    assert len(list(strips.glob("*.png"))) == 3
    edit = tmp_path / "edit.png"
    args = ["edit", "--model", spec, "--directions", str(nav), "--direction", "0", "--seed", "2"]
    assert cli.main([*args, "-o", str(edit)]) == 0 and edit.is_file()
    # the set is bound to these weights: the bundled model refuses it
    assert cli.main(["render", str(nav), "-o", str(tmp_path / "x")]) == 2
    assert "not in this model" in capsys.readouterr().err


def test_class_option_and_checkpoint_reach_the_factory(models, tmp_path, capsys):
    spec = f"{models}:make_conditional"
    import sys

    net = sys.modules.get(models) or __import__(models)
    torch.manual_seed(5)
    weights = tmp_path / "net.pt"
    torch.save(net.Net(classes=3).state_dict(), weights)
    nav = tmp_path / "c.nav"
    common = ["--model", spec, "--checkpoint", str(weights)]
    assert cli.main(["discover", *common, "--layer", "conv", "-k", "2", "--class", "1",
                     "-o", str(nav)]) == 0  # fmt: skip
    ds = DirectionSet.load(nav)
    assert ds.hparams["label"] == 1
    from navcuda.models.from_spec import load_from_spec

    assert ds.fingerprint == load_from_spec(spec, weights).fingerprint()
    assert ds.fingerprint != load_from_spec(spec).fingerprint()  # the checkpoint was used
    assert cli.main(["render", str(nav), *common, "--class", "2", "-o", str(tmp_path / "r")]) == 0
    assert cli.main(["render", str(nav), *common, "--class", "7", "-o", str(tmp_path / "r")]) == 2
    assert "class label out of range" in capsys.readouterr().err
    # an unconditional generator refuses a class
    assert cli.main(["demo", "--class", "1", "-o", str(tmp_path / "demo"), "-k", "1"]) == 2
    assert "unconditional" in capsys.readouterr().err


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_colon", "expects package.module:factory"),
        ("navcuda_no_such_module:make", "cannot import 'navcuda_no_such_module'"),
        ("{m}:missing", "has no attribute 'missing'"),
        ("{m}:make_bad", "the factory returned a int"),
    ],
)
def test_bad_model_specs_are_named(models, spec, message, capsys):
    assert cli.main(["info", "--model", spec.format(m=models)]) == 2
    assert message in capsys.readouterr().err

"""Automatic Table 1 and the layer sweep on the bundled toy model; the realism, layers and table
commands end to end (tiny budgets: these check the bookkeeping, not the science)."""

from __future__ import annotations

import json
import math

import pytest

from navcuda.cli import main
from navcuda.discover import discover
from navcuda.evaluate.interpretability import (
    COST_FLOOR,
    interpretability_table,
    plot_interpretability,
    table_markdown,
)
from navcuda.evaluate.layer_sweep import layer_sweep, plot_layer_sweep
from navcuda.models.default import load_default
from navcuda.toyworld import FACTOR_NAMES


@pytest.fixture(scope="module")
def toy():
    return load_default()


@pytest.fixture(scope="module")
def table(toy):
    sets = {
        "svd": discover(toy, "convs.3", method="svd", k=3),
        "ganspace": discover(toy, "convs.3", method="ganspace", k=2),
    }
    return interpretability_table(toy, sets, threshold=0.3, n_samples=4, realism_samples=24,
                                  progress=False)  # fmt: skip


def test_table_rows_agree_with_the_per_direction_scores(table):
    dirs = table["directions"]
    assert [(d["set"], d["index"]) for d in dirs] == [("svd", i) for i in range(3)] + [
        ("ganspace", i) for i in range(2)
    ]
    assert all(d["top_factor"] in FACTOR_NAMES and 0 < d["disentanglement"] <= 1 for d in dirs)
    latent_clean = {d["top_factor"] for d in dirs if d["latent"] and d["clean"]}
    for row in table["rows"]:
        mine = [d for d in dirs if d["set"] == row["set"]]
        clean = [d for d in mine if d["disentanglement"] >= table["threshold"]]
        assert row["clean"] == len(clean) and row["k"] == len(mine)
        assert row["factor_names"] == sorted({d["top_factor"] for d in clean})
        for th, n in row["factors_at"].items():
            assert n == len({d["top_factor"] for d in mine if d["disentanglement"] >= float(th)})
        assert row["factors_at"][str(table["threshold"])] == row["factors"]
        if row["set"] == "ganspace":
            assert row["unreachable"] is None  # a latent baseline itself
        else:
            assert row["unreachable_factors"] == sorted(set(row["factor_names"]) - latent_clean)
        if clean:
            cost = max(sum(d["realism_cost"] for d in clean) / len(clean), COST_FLOOR)
            eff = sum(d["effect"] for d in clean) / len(clean)
            assert row["effect_per_cost"] == pytest.approx(eff / cost)
        else:
            assert math.isnan(row["effect_per_cost"])


def test_table_outputs(table, tmp_path):
    md = table_markdown(table)
    assert md.count("\n| ") == len(table["rows"])  # one line per row below the header
    assert "| svd | convs.3 | 3 |" in md
    png = plot_interpretability(table, tmp_path / "t.png")
    assert png.stat().st_size > 2000
    json.dumps(table)  # JSON-able


def test_table_refuses_uncalibrated_sets(toy):
    ds = discover(toy, "convs.3", method="svd", k=2, calibrate=False)
    with pytest.raises(ValueError, match="calibrate"):
        interpretability_table(toy, {"svd": ds}, progress=False)


def test_layer_sweep_profiles(toy, tmp_path):
    sweep = layer_sweep(toy, k=2, layers=["convs.3", "convs.6"], n_samples=4, progress=False)
    assert [r["layer"] for r in sweep["layers"]] == ["convs.3", "convs.6"]
    for r in sweep["layers"]:
        assert sum(r["profile"].values()) == pytest.approx(1.0)
        assert set(r["clean_factors"]) <= {d["top_factor"] for d in r["directions"]}
        assert r["total_change"] > 0
    assert plot_layer_sweep(sweep, tmp_path / "l.png").stat().st_size > 2000
    with pytest.raises(ValueError, match="shiftable"):
        layer_sweep(toy, layers=["to_rgb.1"], progress=False)


def test_evaluate_commands(tmp_path, tiny_generator, capsys):
    from navcuda.models.checkpoints import save_generator

    out = tmp_path / "ev"
    named = str(tmp_path / "named.nav")
    from navcuda.models.default import load_default_directions

    load_default_directions().subset([0, 1]).save(named)
    assert main(["evaluate", "realism", named, "-o", str(out), "--n-z", "6", "--n-real", "16",
                 "--t", "-1:1:3"]) == 0  # fmt: skip
    curves = json.loads((out / "realism.json").read_text())["curves"]
    assert [len(c["distances"]) for c in curves] == [3, 3]
    assert all(c["distances"][1] >= 0 for c in curves)
    assert (out / "realism.png").stat().st_size > 2000

    args = ["evaluate", "table", "--methods", "svd", "-k", "2", "--n-z", "3", "--n-real", "16"]
    assert main([*args, "-o", str(out)]) == 0
    assert (out / "sets" / "svd.nav").is_file() and (out / "table.md").is_file()
    assert json.loads((out / "table.json").read_text())["rows"][0]["k"] == 2
    # a saved set computed for another k (or layer) is recomputed, not reused
    capsys.readouterr()
    assert main([*args[:4], "-k", "1", *args[6:], "-o", str(out)]) == 0
    assert "was computed for convs.3, k=2 (this run: convs.3, k=1)" in capsys.readouterr().out
    table = json.loads(
        (out / "table.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON")
    )
    assert table["rows"][0]["k"] == 1
    assert main([*args, "-o", str(out), "--set", "svd"]) == 2
    assert "--set expects LABEL=FILE" in capsys.readouterr().err

    # toy-world experiments refuse other models, and sets where none is expected
    ckpt = str(save_generator(tiny_generator, tmp_path / "g.safetensors"))
    assert main(["evaluate", "layers", "--checkpoint", ckpt, "-o", str(out)]) == 2
    assert main(["evaluate", "table", named, "-o", str(out)]) == 2
    assert main(["evaluate", "realism", "-o", str(out)]) == 2
    assert main([*args, "--methods", "magic", "-o", str(out)]) == 2

"""``navcuda evaluate`` on several processes (issue 24): ``reproduce``, ``locality`` and
``realism`` launched as ``torchrun`` would on 2 gloo processes of one thread each
(:mod:`launch`), their directions split across the ranks, against the same command in this
process. Small: each launch is ~5 s of process start-up on 2 cores and a few seconds of work."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
import torch

from navcuda.cli import main
from navcuda.cli.distributed import distributed_refusal
from navcuda.discover import discover

sys.path.insert(0, str(Path(__file__).resolve().parent))
import launch  # noqa: E402
from tiny_dist_model import make  # noqa: E402

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(
        not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
        reason="torch built without torch.distributed / gloo",
    ),
]

NAMED = Path(__file__).resolve().parents[2] / "navcuda" / "data" / "toyfaces64_named.nav"

#: per experiment: the generator, and the experiment's small settings
CASES = {
    # 3 directions x 4 latent spaces (z, w, w+, activations) of 20 Adam steps each
    "reproduce": (["--model", "tiny_dist_model:make"], ["--steps", "20", "--n-z", "8"]),
    "locality": (["--model", "tiny_dist_model:make"], ["--n-z", "8", "--n-t", "4"]),
    # toy-FD needs the bundled toy-world model; 3 of its named directions
    "realism": ([], ["--only", "0-2", "--n-z", "8", "--n-real", "16", "--t", "-1:1:3"]),
}


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    """3 calibrated SVD directions of the tiny generator (rank 0 gets 1, rank 1 gets 2)."""
    path = tmp_path_factory.mktemp("set") / "svd.nav"
    discover(make(), "convs.1", method="svd", k=3).save(path)
    return path


def _json(folder: Path, experiment: str) -> dict:
    return json.loads((folder / f"{experiment}.json").read_text())


def _approx(obj):
    """``obj`` with every float replaced by ``pytest.approx(rel=1e-4)`` (see the test below)."""
    if isinstance(obj, dict):
        return {k: _approx(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_approx(v) for v in obj]
    if isinstance(obj, float):
        return pytest.approx(obj, rel=1e-4, abs=1e-9)
    return obj


@pytest.mark.parametrize("experiment", sorted(CASES))
def test_sharded_evaluation_equals_single_process(tmp_path, tiny_set, experiment):
    """Each rank evaluates its share of the directions from the same seeds as one process does
    (every direction's computation is independent of the others': its own latents, its own
    ``torch.Generator`` for the reproduction's batches, the real statistics computed by rank 0
    and sent); so the JSON equals the single-process one up to float32 rounding, and rank 0
    alone writes it and the figure (rank 1 prints nothing). Not bit for bit: this process and
    the ranks may split torch's float32 reductions over different thread counts (seen in a
    clean CI install: relative 1e-8 on locality scores, 1e-6 on reproduce's residuals after 300
    optimisation steps), so numbers are compared to rel 1e-4 and everything else exactly."""
    model, options = CASES[experiment]
    nav = str(NAMED if experiment == "realism" else tiny_set)
    common = ["evaluate", experiment, nav, *model, *options]

    assert main([*common, "-o", str(tmp_path / "single")]) == 0
    ref = _json(tmp_path / "single", experiment)

    codes = launch.run([*common, "-o", str(tmp_path / "two")], 2, tmp_path / "logs", timeout=90)
    logs = [(tmp_path / "logs" / f"rank{r}.log").read_text() for r in (0, 1)]
    assert codes == [0, 0], "\n".join(log[-1500:] for log in logs)
    got = _json(tmp_path / "two", experiment)
    assert got == _approx(ref)
    assert (tmp_path / "two" / f"{experiment}.png").is_file()
    assert f"wrote {tmp_path / 'two'}" in logs[0] and "wrote" not in logs[1]
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "two").iterdir())
    if experiment == "reproduce":  # rank 0 prints every row, rank 1's too
        assert len(ref["rows"]) == 12
        for row in ref["rows"]:
            assert f"{row['direction']:<16} {row['space']:<12} residual" in logs[0]


def test_an_error_on_one_rank_ends_every_rank_with_it(tmp_path):
    """Rank 1's share holds a direction without an amplitude (locality needs one): every rank
    raises that error once the shares are done, and exits with the usage-error code."""
    from navcuda.io.directions import DirectionSet

    ds = DirectionSet.load(NAMED).subset(range(8))
    ds.amplitudes = torch.tensor([float(a) for a in ds.amplitudes[:7]] + [float("nan")])
    bad = tmp_path / "bad.nav"
    ds.save(bad)
    args = ["evaluate", "locality", str(bad), "--only", "6,7", "--n-z", "2", "--n-t", "2",
            "-o", str(tmp_path / "out")]  # fmt: skip
    codes = launch.run(args, 2, tmp_path / "logs", timeout=60)
    logs = [(tmp_path / "logs" / f"rank{r}.log").read_text() for r in (0, 1)]
    assert codes == [2, 2], "\n".join(logs)
    for log in logs:
        assert "has no recommended amplitude" in log
    assert not (tmp_path / "out" / "locality.json").exists()


@pytest.mark.parametrize(
    ("argv", "refused"),
    [
        (["discover", "--method", "svd"], None),
        (["evaluate", "reproduce", "d.nav"], None),
        (["evaluate", "locality", "d.nav"], None),
        (["evaluate", "realism", "d.nav"], None),
        (["evaluate", "table"], "evaluate table runs in one process"),
        (["evaluate", "layers"], "evaluate layers runs in one process"),
        (["render", "d.nav"], "only discover and evaluate"),
    ],
)
def test_which_commands_run_on_several_processes(argv, refused):
    from navcuda.cli.parser import build_parser

    args: argparse.Namespace = build_parser().parse_args(argv)
    why = distributed_refusal(args)
    assert (why is None) if refused is None else (refused in why)

"""Discovery on several processes (issue 24): ``python -m navcuda discover`` launched as
``torchrun`` would on 2 gloo processes of one thread each (:mod:`launch`), against the same run in
this process. Few and small: each launch costs ~5 s of process start-up on 2 cores."""

from __future__ import annotations

import copy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from navcuda.discover import discover
from navcuda.discover.hybrid import HYBRID_DEFAULTS
from navcuda.discover.optimize import DirectionOptimizer, OptimizeConfig
from navcuda.io.directions import DirectionSet
from navcuda.metrics.perceptual import PixelMSE

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

MODEL = ["--model", "tiny_dist_model:make", "--layer", "convs.1"]
SPECTRUM = dict(n_latents=6, tol=1e-4, resize=None, block_dtype="float64")


def _discover(method: str, out: Path, k: int = 3, **params) -> list[str]:
    """``navcuda discover`` arguments for the tiny model (``--param`` per keyword)."""
    args = ["discover", "--method", method, *MODEL, "-k", str(k), "-o", str(out)]
    if method == "spectrum":
        args += ["--metric", "pixel"]
    for name, v in params.items():
        args += ["--param", f"{name}={'null' if v is None else str(v).lower()}"]
    return args


def _ok(codes, ranks_logs: Path) -> None:
    logs = "\n".join(p.read_text()[-1500:] for p in sorted(ranks_logs.glob("rank*.log")))
    assert codes == [0, 0], logs


@pytest.mark.parametrize("placement", ["replicated", "rank0"])
def test_sharded_spectrum_equals_single_process(tmp_path, placement):
    """Each rank holds 3 of the 6 latents; the all-reduced products are the single-process mean
    up to float rounding, so the eigenpairs agree to float32 rounding (the eigensolver is the
    same; the products differ in the order of their sums). The rank-0 placement also calibrates
    the amplitudes, sharded over the directions."""
    calibrate = placement == "rank0"
    args = _discover(
        "spectrum", tmp_path / "d.nav", **SPECTRUM, calibrate=calibrate, progress=False
    )
    codes = launch.run(args, 2, tmp_path, extra_env={"NAVCUDA_DIST_SOLVER": placement})
    _ok(codes, tmp_path)
    got = DirectionSet.load(tmp_path / "d.nav")
    ref = discover(make(), "convs.1", method="spectrum", k=3, metric=PixelMSE(), progress=False,
                   calibrate=calibrate, **SPECTRUM)  # fmt: skip
    torch.testing.assert_close(got.values, ref.values, rtol=1e-5, atol=0)
    a, b = got.coefficients.flatten(1).double(), ref.coefficients.flatten(1).double()
    agreement = torch.linalg.svdvals(a @ b.t()).min()  # cosines of the principal angles
    assert float(agreement) >= 0.999
    assert got.extra["distributed"]["world_size"] == 2
    assert got.extra["distributed"]["solver"] == placement
    assert got.extra["hessian"]["n_latents"] == 6
    if calibrate:
        torch.testing.assert_close(got.amplitudes, ref.amplitudes, rtol=1e-3, atol=0)


def test_spectrum_checkpoint_across_processes(tmp_path):
    """A 2-process spectrum cut short writes one checkpoint (rank 0); resumed on 2 processes
    with the other solver placement it ends as the uninterrupted single-process run, to float
    rounding (the sums over the ranks' latents round differently)."""
    ckpt = tmp_path / "s.state"
    args = _discover("spectrum", tmp_path / "cut.nav", **SPECTRUM, calibrate=False,
                     progress=False, max_iters=2, checkpoint=ckpt)  # fmt: skip
    codes = launch.run(args, 2, tmp_path / "cut", extra_env={"NAVCUDA_DIST_SOLVER": "rank0"})
    _ok(codes, tmp_path / "cut")
    assert torch.load(ckpt, weights_only=True)["state"]["it"] == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".s.state")] == []
    args = _discover("spectrum", tmp_path / "d.nav", **SPECTRUM, calibrate=False,
                     progress=True, checkpoint=ckpt)  # fmt: skip
    _ok(launch.run(args, 2, tmp_path / "resumed"), tmp_path / "resumed")
    assert "at iteration 2 (" in (tmp_path / "resumed" / "rank0.log").read_text()
    got = DirectionSet.load(tmp_path / "d.nav")
    ref = discover(make(), "convs.1", method="spectrum", k=3, metric=PixelMSE(), progress=False,
                   calibrate=False, **SPECTRUM)  # fmt: skip
    torch.testing.assert_close(got.values, ref.values, rtol=1e-5, atol=0)
    assert got.extra["converged"] and got.extra["hvp_count"] == ref.extra["hvp_count"]
    assert got.extra["distributed"]["solver"] == "replicated"


def test_ica_equals_single_process(tmp_path):
    """``discover --method ica``: each rank renders the image changes of its share of the
    singular directions (and calibrates its share), rank 0 runs FastICA on all of them; the set
    is the single-process one (the same renders, gathered in order)."""
    params = dict(components=4, n_latents=3, resize=None, target_rms=0.05, progress=False)
    codes = launch.run(_discover("ica", tmp_path / "d.nav", **params), 2, tmp_path)
    _ok(codes, tmp_path)
    got = DirectionSet.load(tmp_path / "d.nav")
    ref = discover(make(), "convs.1", method="ica", k=3, **params)
    torch.testing.assert_close(got.coefficients, ref.coefficients, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.amplitudes, ref.amplitudes, rtol=1e-4, atol=0)


# ---------------------------------------------------------------- DDP optimisation
OPT = dict(k=3, batch_size=16, lr=1e-4, seed=0)


def _single(steps: int, tmp_path: Path) -> list[dict]:
    """Single-process states after 1..steps steps; the one after 2 saved to single2.pt."""
    opt = DirectionOptimizer(make(), "convs.1", OptimizeConfig(**OPT))
    states = []
    for i in range(steps):
        opt.train_step()
        states.append(copy.deepcopy(opt.state_dict()))  # (it shares the live tensors)
        if i == 1:
            opt.save(tmp_path / "single2.pt")
    return states


def _launch_optimize(tmp_path: Path, name: str, steps: int, checkpoint: Path) -> dict:
    args = _discover("optimize", tmp_path / f"{name}.nav", k=OPT["k"], steps=steps, lr=OPT["lr"],
                     batch_size=OPT["batch_size"], calibrate=False, progress=False,
                     checkpoint=checkpoint)  # fmt: skip
    _ok(launch.run(args, 2, tmp_path / name), tmp_path / name)
    return torch.load(checkpoint, weights_only=True)


def _update_error(got: dict, ref: dict, init: dict) -> float:
    """``|got - ref| / |ref - init|`` over the floating tensors of two state dicts."""
    diff = upd = 0.0
    for key, v in ref.items():
        if v.is_floating_point():
            diff += float((got[key] - v).double().square().sum())
            upd += float((v - init[key]).double().square().sum())
    return (diff / upd) ** 0.5


def _assert_same_run(got: dict, ref: dict, init: dict | None = None) -> None:
    """Same global batch, float32 sums in another order (per-rank partial sums, DDP's bucketed
    all-reduce, the cross-rank batch norm's float64 statistics): the first step's gradients agree
    to ~4e-6 relative at this batch of 16, which is float32's own error here (the single-process
    float32 gradient is 4.7e-6 from float64's). But Adam's first step is ``lr * sign(g)``: the few
    reconstructor weights whose gradient is within that rounding of zero may move by ``lr`` in
    opposite directions, and the next steps' images and gradients inherit it. So the states are
    compared by the difference of the two runs' updates relative to the updates themselves,
    which that bounds (measured: 1e-4 for the reconstructor and 3e-3 to 7e-3 for the 18 direction
    coefficients after 2-3 steps; a step from the same state: 2e-7 and 0). Bounds 10x above."""
    assert got["step"] == ref["step"]
    losses = torch.tensor([[h["loss"], h["accuracy"]] for h in got["history"]])
    ref_losses = torch.tensor([[h["loss"], h["accuracy"]] for h in ref["history"]])
    torch.testing.assert_close(losses, ref_losses, rtol=1e-4, atol=0)
    if init is None:  # the optimize method's initial state (hybrid: its own)
        init = DirectionOptimizer(make(), "convs.1", OptimizeConfig(**OPT)).state_dict()
    coeffs = _update_error({"c": got["coeffs"]}, {"c": ref["coeffs"]}, {"c": init["coeffs"]})
    recon = _update_error(got["reconstructor"], ref["reconstructor"], init["reconstructor"])
    assert coeffs < 5e-2 and recon < 1e-2, (coeffs, recon)


def test_ddp_optimize_equals_single_process_and_resumes_on_another_world_size(tmp_path):
    """2 steps on 2 processes equal 2 single-process steps with the same global batch; the
    single-process checkpoint after 2 steps resumes on 2 processes, and the 2-process one in
    one process, both giving the single-process third step."""
    single = _single(3, tmp_path)
    ddp = _launch_optimize(tmp_path, "ddp", 2, tmp_path / "ddp.pt")
    _assert_same_run(ddp, single[1])

    resumed_on_2 = tmp_path / "resumed.pt"  # written by one process, resumed by two
    shutil.copy(tmp_path / "single2.pt", resumed_on_2)
    _assert_same_run(_launch_optimize(tmp_path, "resume", 3, resumed_on_2), single[2])

    opt = DirectionOptimizer(make(), "convs.1", OptimizeConfig(**OPT))  # two -> one
    opt.load_state(tmp_path / "ddp.pt")
    opt.train_step()
    _assert_same_run(opt.state_dict(), single[2])


# ---------------------------------------------------------------- failures
def test_killed_rank_ends_the_run_with_an_error(tmp_path):
    """Rank 1 is killed (SIGKILL) while the eigensolver runs; rank 0's next all-reduce fails and
    it exits with an error line, well within the timeout (no hang)."""
    args = _discover("spectrum", tmp_path / "d.nav", n_latents=6, tol=1e-12, max_iters=100000,
                     resize=None, calibrate=False, progress=True)  # fmt: skip
    ranks = launch.start(args, 2, tmp_path, extra_env={"NAVCUDA_DIST_TIMEOUT": "60"})
    deadline = time.monotonic() + 60
    while "max_residual" not in ranks[0].text():  # rank 0's bar: the solver is iterating
        assert time.monotonic() < deadline and ranks[0].proc.poll() is None, ranks[0].text()
        time.sleep(0.2)
    ranks[1].proc.send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    codes = launch.wait(ranks, timeout=30)
    assert codes[0] not in (0, None) and codes[1] == -signal.SIGKILL
    assert time.monotonic() - t0 < 30
    assert "navcuda discover: error:" in ranks[0].text()
    assert "peer" in ranks[0].text()
    assert not (tmp_path / "d.nav").exists()


def test_bad_input_fails_on_every_rank(tmp_path):
    """An error every rank meets (fewer latents than processes) ends every rank with it."""
    args = _discover("spectrum", tmp_path / "d.nav", k=2, n_latents=1, resize=None, progress=False)
    codes = launch.run(args, 2, tmp_path, timeout=60)
    assert codes == [2, 2]
    for r in (0, 1):
        assert "cannot be shared by 2 processes" in (tmp_path / f"rank{r}.log").read_text()


_SHUTDOWN = """
import sys, time
from navcuda import distributed as dist
dist.init(dist.launch_env(), timeout=60)
time.sleep(float(sys.argv[1]))
t0 = time.monotonic()
dist.shutdown(wait_for_peers=sys.argv[2] == "wait")
print(f"{time.monotonic() - t0:.3f}")
"""


@pytest.mark.parametrize("peer", ["succeeds", "fails"])
def test_shutdown_after_success_waits_for_every_rank(peer):
    """After a successful run rank 0 (the store's host) leaves only once rank 1, 2 s slower, has
    got to the end too; a peer that fails instead (tears its group down without waiting) does
    not keep rank 0 waiting for the 60 s timeout."""
    port = launch.free_port()
    procs = []
    for r, (delay, mode) in enumerate(
        [("0", "wait"), ("2", "wait" if peer == "succeeds" else "-")]
    ):
        cmd = [sys.executable, "-c", _SHUTDOWN, delay, mode]
        env = launch.rank_env(r, 2, port)
        procs.append(
            subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outs = [p.communicate(timeout=50)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    waited = float(outs[0].strip().splitlines()[-1])
    if peer == "succeeds":
        assert waited > 1.5, outs
    else:
        assert waited < 20, outs


# ---------------------------------------------------------------- hybrid
HYBRID = dict(k=3, basis_size=4, steps=2, batch_size=16, lr=1e-4, seed=0)
HYBRID_SPECTRUM = dict(n_latents=6, tol=1e-4, resize=None, block_dtype="float64")


def test_hybrid_equals_single_process(tmp_path):
    """``discover --method hybrid`` on 2 processes: the basis from the sharded spectrum (3
    latents per rank), then 2 DDP steps in it, against the same run in this process.

    The basis is the sharded spectrum's (the test above): the same eigenvalues to float32
    rounding, and eigenvectors that differ by the products' rounding (float32 sums in another
    order) over the eigengaps (measured: 5e-7 per vector; bound 1e-5). The steps then differ as
    the optimisation's do (:func:`_assert_same_run`, same bounds) and hardly more: the initial
    coefficients do not depend on the basis, and a basis 5e-7 away changes the shifted images
    by less than the float32 rounding of the per-rank sums (measured: update differences 0 for
    the 12 coefficients and 2e-5 for the reconstructor, losses 2e-6 apart)."""
    single = tmp_path / "single.pt"
    ref_set = discover(make(), "convs.1", method="hybrid", progress=False, calibrate=False,
                       checkpoint=single, spectrum_params={**HYBRID_SPECTRUM, "metric": PixelMSE()},
                       **HYBRID)  # fmt: skip
    ddp = tmp_path / "ddp.pt"
    params = {k: v for k, v in HYBRID.items() if k not in ("k", "seed")}
    params |= {f"spectrum_{k}": v for k, v in HYBRID_SPECTRUM.items()}
    args = _discover("hybrid", tmp_path / "d.nav", k=HYBRID["k"], calibrate=False, progress=False,
                     checkpoint=ddp, **params) + ["--metric", "pixel"]  # fmt: skip
    _ok(launch.run(args, 2, tmp_path / "logs"), tmp_path / "logs")

    # the basis: rank 0 saved it beside the checkpoint, as one process does
    got_basis = DirectionSet.load(f"{ddp}.basis.nav")
    ref_basis = DirectionSet.load(f"{single}.basis.nav")
    assert got_basis.extra["distributed"]["world_size"] == 2
    torch.testing.assert_close(got_basis.values, ref_basis.values, rtol=1e-5, atol=0)
    a = got_basis.coefficients.flatten(1).double()
    b = ref_basis.coefficients.flatten(1).double()
    assert float(((a - b).norm(dim=1) / b.norm(dim=1)).max()) < 1e-5

    # the optimisation in that basis
    hp = {k: v for k, v in HYBRID.items() if k != "basis_size"}
    init_cfg = OptimizeConfig(**{**HYBRID_DEFAULTS, **hp})
    init = DirectionOptimizer(make(), "convs.1", init_cfg, basis=ref_basis.coefficients,
                              method="hybrid").state_dict()  # fmt: skip
    got = torch.load(ddp, weights_only=True)
    _assert_same_run(got, torch.load(single, weights_only=True), init)
    got_set = DirectionSet.load(tmp_path / "d.nav")
    cos = torch.nn.functional.cosine_similarity(
        got_set.coefficients.flatten(1).double(), ref_set.coefficients.flatten(1).double()
    )
    assert float(cos.min()) > 1 - 1e-6


def test_a_failed_rank_leaves_with_its_code_and_its_output():
    """A failed rank ends without the interpreter's teardown (whose C++ threads could abort it,
    exit -6): the error's own code, and what it printed (unflushed, to a pipe) still arrives."""
    code = "from navcuda.cli.distributed import _leave; print('error line', end=''); _leave(2)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (2, "error line"), proc.stderr

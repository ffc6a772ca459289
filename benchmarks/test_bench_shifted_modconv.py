"""shifted_modconv: every strategy against the grouped reference, forward and forward+backward.

Each group times one shift specification at one shape with the ``"grouped"`` strategy (per-sample
kernels materialised, one grouped convolution: the reference) and with the strategy made for it:

- ``shared``: one shift for the whole batch (a Hessian-vector product's perturbation) -> ``shared``;
- ``split``: 2 directions over the batch (a strip: few directions, many ``t``) -> ``split``;
- ``svd``: 64 directions in singular-value space gathered per sample with random ``t`` (one step
  of the optimisation method) -> ``factorised``.

Backward: the gradients the callers need, w.r.t. the shift only (the direction coefficients /
deltas and ``t``; the activations and the kernel are constants there).
"""

from __future__ import annotations

import pytest
import torch
from memory import benchmark_with_memory
from paired import paired_ratio
from timing import sync

from navcuda.ops.shifted_modconv import SharedShift, SplitShift, SVDShift, shifted_modconv
from navcuda.shift import LayerSpace

# (B, channels, resolution): the official 16x16 layer (batch 8) and the bundled model's convs.3
# (64 channels at 16x16, batch 32, as in the optimisation method).
SHAPES = {"official 512ch 16x16 B=8": (8, 512, 16), "toy convs.3 64ch 16x16 B=32": (32, 64, 16)}
FAST = {"shared": "shared", "split": "split", "svd": "factorised"}
K_SVD = 64


def _case(shape_name: str, kind: str, device: torch.device):
    """(x, weight, styles, noise, bias, make_shift) with ``make_shift()`` -> (shift, leaves)."""
    b, c, res = SHAPES[shape_name]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, res, res, generator=gen).to(device)
    w = torch.randn(c, c, 3, 3, generator=gen)
    styles = (torch.randn(b, c, generator=gen) * 0.3 + 1).to(device)
    noise = torch.randn(1, 1, res, res, generator=gen).to(device)
    bias = (0.1 * torch.randn(c, generator=gen)).to(device)
    scale = float(w.norm())
    t = (scale * (torch.rand(b, generator=gen) + 0.5)).to(device)
    if kind == "shared":
        leaves = [(0.1 * torch.randn(c, c, 3, 3, generator=gen)).to(device)]
        make = lambda lv: SharedShift(lv[0])  # noqa: E731
    elif kind == "split":
        d = torch.randn(2, c, c, 3, 3, generator=gen)
        leaves = [(d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1, 1)).to(device), t]
        index = (torch.arange(b) % 2).to(device)
        make = lambda lv: SplitShift(lv[0], lv[1], index)  # noqa: E731
    else:
        space = LayerSpace(w)
        u, s, vh = (m.float().to(device) for m in (space.u, space.s, space.vh))
        leaves = [torch.randn(K_SVD, space.rank, generator=gen).to(device), t]
        index = torch.randint(K_SVD, (b,), generator=gen).to(device)
        make = lambda lv: SVDShift(u, s, vh, lv[1], lv[0], index)  # noqa: E731
    return x, w.to(device), styles, noise, bias, make, leaves


def _runner(device, case, kind, strategy, backward=True):
    x, w, styles, noise, bias, make, leaves = _case(case, kind, device)
    leaves = [v.clone().requires_grad_(backward) for v in leaves]
    gy = torch.randn(x.shape[0], w.shape[0], x.shape[2], x.shape[3], device=device)

    def run():
        with torch.set_grad_enabled(backward):
            y = shifted_modconv(x, w, styles, make(leaves), noise=noise, noise_strength=0.1,
                                bias=bias, strategy=strategy)  # fmt: skip
            if backward:
                torch.autograd.grad(y, leaves, gy)
        sync(device)

    return run


@pytest.mark.parametrize("kind", list(FAST))
@pytest.mark.parametrize("case", list(SHAPES))
def test_shifted_modconv_paired(benchmark, device, case, kind):
    """Forward+backward, the grouped reference and the fast strategy alternated (paired A/B)."""
    reference = _runner(device, case, kind, "grouped")
    fast = _runner(device, case, kind, FAST[kind])
    benchmark.group = f"paired: shifted_modconv fwd+bwd, {kind} shift, {case}"
    benchmark.extra_info["role"] = "paired"
    result = {}
    benchmark.pedantic(lambda: result.update(paired_ratio(reference, fast)), rounds=1)
    benchmark.extra_info["paired_ratio"] = result


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("role", ["reference", "fast"])
@pytest.mark.parametrize("kind", list(FAST))
@pytest.mark.parametrize("case", list(SHAPES))
def test_shifted_modconv(benchmark, device, case, kind, role, backward):
    strategy = "grouped" if role == "reference" else FAST[kind]
    run = _runner(device, case, kind, strategy, backward)
    benchmark_with_memory(
        benchmark,
        run,
        device,
        f"shifted_modconv {'fwd+bwd' if backward else 'fwd'}, {kind} shift, {case}",
        role,
        strategy=strategy,
    )

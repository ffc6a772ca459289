"""The optimisation step of the optimize and hybrid methods on several processes (DDP).

The direction matrix and the reconstructor are replicated on every rank and wrapped, together, in
one :class:`~torch.nn.parallel.DistributedDataParallel` module; every step's *global* batch is
drawn from the run's seed and the step count exactly as in one process, and each rank renders and
classifies its contiguous share of it (:func:`navcuda.distributed.shard`). A rank's loss is its
share of the global batch's mean (sums divided by the global batch size), scaled by the world
size because DDP averages the gradients, so the all-reduced gradient is that of the global mean:
the run equals the single-process run with the same batch (up to float rounding) and does not
depend on the number of processes -- a checkpoint resumes on any number of them.

The reconstructor's batch normalisation must see the global batch too (in one process its
statistics are the whole batch's): its ``BatchNorm2d`` layers become
:class:`CrossRankBatchNorm2d`, which sums the per-channel sums and sums of squares of all ranks
(one differentiable all-reduce per layer on a group of its own, so that it never interleaves with
DDP's gradient buckets; ``torch.nn.SyncBatchNorm`` runs on GPUs only). The step updates the
parameters after the backward pass (DDP's all-reduced gradients are complete only then), not
inside it as the single-process step does.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import nn

from navcuda import distributed as dist
from navcuda.models.interface import frozen

__all__ = ["CrossRankBatchNorm2d", "DDPStep"]


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks of ``group``, differentiable: the gradient is the sum of the ranks'
    gradients (each rank's output feeds every rank's loss)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        out = x.clone(memory_format=torch.contiguous_format)
        tdist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _AllReduceSum.apply(grad, ctx.group), None


class CrossRankBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are those of the batch of every rank of
    ``group`` (float64 sums, all-reduced with autograd); shares ``bn``'s parameters and buffers
    (same state dict). Outside training, or in one process, a plain ``BatchNorm2d``."""

    def __init__(self, bn: nn.BatchNorm2d, group: Any = None) -> None:
        super().__init__(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        self.weight, self.bias = bn.weight, bn.bias
        self.running_mean, self.running_var = bn.running_mean, bn.running_var
        self.num_batches_tracked = bn.num_batches_tracked
        self.training = bn.training
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_active():
            return super().forward(x)
        c = x.shape[1]
        dims = [d for d in range(x.ndim) if d != 1]
        count = torch.tensor([x.numel() // c], dtype=torch.float64, device=x.device)
        local = torch.cat(
            [x.sum(dims, dtype=torch.float64), (x * x).sum(dims, dtype=torch.float64), count]
        )
        total = _AllReduceSum.apply(local, self.group)
        n = total[-1].detach()
        mean = total[:c] / n
        var = (total[c : 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            self._update_running(mean.detach(), var.detach(), float(n))
        shape = [1, c] + [1] * (x.ndim - 2)
        scale = torch.rsqrt(var + self.eps).to(x.dtype)
        y = (x - mean.to(x.dtype).view(shape)) * scale.view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, n: float) -> None:
        """As ``BatchNorm2d``: momentum (or the cumulative average when it is None) and the
        unbiased variance ``var * n / (n - 1)``."""
        self.num_batches_tracked.add_(1)
        m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (n / max(n - 1.0, 1.0))
        self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
        self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)


def _cross_rank_batchnorm(module: nn.Module, group: Any) -> None:
    """Replace every ``BatchNorm2d`` under ``module`` by a :class:`CrossRankBatchNorm2d` sharing
    its parameters and buffers (in place; optimisers keep their parameters)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, CrossRankBatchNorm2d):
            setattr(module, name, CrossRankBatchNorm2d(child, group))
        else:
            _cross_rank_batchnorm(child, group)


class _Replica(nn.Module):
    """What DDP replicates: the direction coefficients and the reconstructor. Its forward renders
    the shifted images (the generator is frozen and not a submodule) and classifies the pairs."""

    def __init__(self, opt: Any) -> None:
        super().__init__()
        self.coeffs = opt.coeffs
        self.reconstructor = opt.reconstructor
        self._opt = [opt]  # a list: not registered as a submodule

    def forward(self, state: Any, original: torch.Tensor, k: torch.Tensor, t: torch.Tensor):
        opt = self._opt[0]
        shifted = opt.generator.resume(state, opt.shift(k, t))
        rdtype = opt._reconstructor_dtype
        return self.reconstructor(original.to(rdtype), shifted.to(rdtype))


class DDPStep:
    """The distributed training step of a :class:`~navcuda.discover.optimize.DirectionOptimizer`
    (built on its first step, after any resume: DDP broadcasts rank 0's parameters then)."""

    def __init__(self, opt: Any) -> None:
        if not isinstance(opt.coeffs, nn.Parameter):
            raise TypeError("DDPStep needs the optimizer's coefficients as an nn.Parameter")
        self.opt = opt
        self.bn_group = tdist.new_group()  # batch-norm statistics, apart from DDP's buckets
        _cross_rank_batchnorm(opt.reconstructor, self.bn_group)
        self.ddp = nn.parallel.DistributedDataParallel(_Replica(opt), device_ids=None)

    def step(self, inputs: Any, k: torch.Tensor, t: torch.Tensor) -> dict[str, float]:
        """One step on this rank's share of the global batch ``(inputs, k [B], t [B])``."""
        opt, cfg, g = self.opt, self.opt.config, self.opt.generator
        b, world = len(k), dist.world_size()
        if b < world:
            raise ValueError(
                f"batch_size={b} is smaller than the {world} processes sharing it: use a batch of "
                "at least one pair per process"
            )
        part = dist.shard(b)
        inputs, k, t = inputs.take(part), k[part], t[part]
        with frozen(g):
            with torch.no_grad():
                state = g.split(inputs, opt.info.name)
                original = g.resume(state)
            logits, t_hat = self.ddp(state, original, k, t)
        ce_sum = F.cross_entropy(logits, k, reduction="sum")
        t_sum = (t_hat - t / opt.t_max).abs().sum()
        local = (ce_sum + cfg.t_weight * t_sum) / b  # this rank's part of the global mean
        correct = (logits.argmax(1) == k).sum()
        sums = torch.stack([ce_sum.detach(), t_sum.detach(), correct]).double()
        tdist.all_reduce(sums)
        ce, t_err, accuracy = (float(v) / b for v in sums)
        loss = ce + cfg.t_weight * t_err
        if not torch.isfinite(torch.tensor(loss)):  # every rank sees the same sums
            raise FloatingPointError(f"non-finite loss at step {opt.step_count}: {loss}")
        opt.optimizer.zero_grad()
        (local * world).backward()  # DDP averages the ranks' gradients
        opt.optimizer.step()
        return {"loss": loss, "ce": ce, "accuracy": accuracy, "t_error": t_err}

"""The optimisation method: a direction matrix and a reconstructor, trained jointly (paper §3.2).

K directions are rows of a coefficient matrix over a basis of one layer's weight space: the layer's
singular vectors (``basis="svd"``, the paper's method) or any orthonormal set of weight-space
vectors (``basis=tensor``, e.g. Hessian eigenvectors: the hybrid method). Each step draws latents
z, a direction index k and a shift t (uniform in ``±[t_min, T]``), renders ``G_theta(z)`` and
``G_{theta + t Delta_k}(z)`` and trains a reconstructor to recover k (cross-entropy) and t (L1,
weight ``t_weight``) from the pair; the direction matrix learns to make the effects distinguishable.

Scale: the paper's amplitudes (SVD basis ``T=3500, t_min=300, w=0.0025``; Hessian basis
``T=60, t_min=15, w=0.25``; hybrid ``T=80``) are absolute Frobenius norms for the FFHQ layer whose
raw kernel norm is about 1536. navcuda expresses ``T`` and ``t_min`` relative to the layer's
kernel norm (``t_max_rel=3500/1536``...) so that the defaults carry over to models of any size, and
predicts ``t / T``, with ``t_weight = w * T`` so that the loss equals the paper's.

Unshifted images and the activations before the layer are computed once per batch without
gradients; only the tail of the generator runs with per-sample shifts, passed in structured form
so that no per-sample kernel is materialised: for the SVD basis an
:class:`~navcuda.ops.shifted_modconv.SVDShift` over the layer's singular vectors (the generator
runs the factorised strategy: a convolution with the fixed U-kernel, a per-sample channel scaling
by ``s + t_b c_b / |c_b|``, a 1x1 convolution with Vh), for a weight basis a
:class:`~navcuda.ops.shifted_modconv.SplitShift` of the K unit shifts (formed once per step) with
the per-sample ``t`` and direction index. Gradients reach the direction coefficients either way.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from navcuda import distributed as dist
from navcuda.discover import params as P
from navcuda.discover.adam_in_backward import InBackwardAdam
from navcuda.grad_mode import differentiates
from navcuda.io.directions import DirectionSet
from navcuda.models.interface import LayerShift, ShiftableGenerator, frozen
from navcuda.shift import layer_space, unflatten_kernel

__all__ = [
    "OPTIMIZE_PARAMS",
    "OptimizeConfig",
    "DirectionOptimizer",
    "discover_optimize",
    "FFHQ_KERNEL_NORM",
]

#: Frobenius norm of the raw kernel of convs[3] of the official FFHQ model (512x512x3x3, N(0, 1)).
FFHQ_KERNEL_NORM = 1536.0


@dataclass
class OptimizeConfig:
    """Hyper-parameters (paper defaults, scaled as described in the module docstring)."""

    k: int = 64
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-4
    t_max_rel: float = 3500.0 / FFHQ_KERNEL_NORM
    t_min_rel: float = 300.0 / FFHQ_KERNEL_NORM
    t_weight: float = 0.0025 * 3500.0
    reconstructor_size: int | None = None
    #: recompute the reconstructor's stem in the backward (less memory, a few % more time;
    #: :mod:`navcuda.discover.reconstructor`)
    checkpoint_stem: bool = False
    truncation_psi: float = 1.0
    #: a conditional generator's class for every sample (None: drawn with the latents); either
    #: way the original and the shifted image of a pair share their label
    label: int | None = None
    patience: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ValueError(f"the optimisation method needs k >= 2 directions, got {self.k}")
        if not 0 <= self.t_min_rel < self.t_max_rel:
            raise ValueError(
                f"need 0 <= t_min_rel < t_max_rel, got {self.t_min_rel}, {self.t_max_rel}"
            )
        if self.batch_size < 1 or self.steps < 0 or self.lr <= 0:
            raise ValueError(f"invalid optimisation config: {self}")


class DirectionOptimizer:
    """State of one optimisation run: direction matrix, reconstructor, optimizer, step counter."""

    def __init__(
        self,
        generator: ShiftableGenerator,
        layer: int | str,
        config: OptimizeConfig | None = None,
        basis: torch.Tensor | None = None,
        method: str = "optimize",
    ) -> None:
        from navcuda.discover.reconstructor import Reconstructor

        self.config = cfg = config or OptimizeConfig()
        self.generator = generator
        self.info = generator.layer(layer)
        self.method = method
        dev = generator.device
        weight = generator.kernel(self.info.name)
        self.kernel_norm = float(weight.detach().double().norm())
        if basis is None:
            space = layer_space(generator, self.info.name)
            self.basis_kind = "svd"
            self._u = space.u.to(device=dev, dtype=weight.dtype)
            self._s = space.s.to(device=dev, dtype=weight.dtype)
            self._vh = space.vh.to(device=dev, dtype=weight.dtype)
            n_basis = space.rank
        else:
            if basis.ndim != 5 or tuple(basis.shape[1:]) != self.info.weight_shape:
                raise ValueError(
                    f"basis must be [n, *{list(self.info.weight_shape)}], got {list(basis.shape)}"
                )
            self.basis_kind = "weight"
            b = basis.detach().to(device=dev, dtype=weight.dtype)
            self._basis = b / b.flatten(1).norm(dim=1).view(-1, 1, 1, 1, 1)
            n_basis = b.shape[0]
        gen = torch.Generator().manual_seed(cfg.seed)
        # a Parameter, so that DDP can replicate it (navcuda.discover.ddp)
        self.coeffs = torch.nn.Parameter(torch.randn(cfg.k, n_basis, generator=gen).to(dev))
        size = cfg.reconstructor_size or min(256, generator.image_shape[1])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.reconstructor = Reconstructor(cfg.k, size, cfg.checkpoint_stem).to(dev)
        self._reconstructor_dtype = next(self.reconstructor.parameters()).dtype
        self.optimizer = InBackwardAdam([self.coeffs, *self.reconstructor.parameters()], cfg.lr)
        self.step_count = 0
        self.history: list[dict[str, float]] = []
        self._ddp = None  # the distributed step, built on the first step under a process group

    @property
    def t_max(self) -> float:
        return self.config.t_max_rel * self.kernel_norm

    @property
    def t_min(self) -> float:
        return self.config.t_min_rel * self.kernel_norm

    def unit_deltas(self) -> torch.Tensor:
        """The K unit-norm shifts ``[K, out, in, kh, kw]`` (differentiable in the coefficients)."""
        c = self.coeffs / self.coeffs.norm(dim=1, keepdim=True).clamp_min(1e-12)
        c = c.to(self._u.dtype if self.basis_kind == "svd" else self._basis.dtype)
        if self.basis_kind == "svd":
            m = (self._u.unsqueeze(0) * c.unsqueeze(1)) @ self._vh  # [K, kh*kw*in, out]
            return unflatten_kernel(m, self.info.weight_shape)
        d = torch.einsum("kn,n...->k...", c, self._basis)
        return d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1, 1)

    def shift(self, k: torch.Tensor, t: torch.Tensor) -> LayerShift:
        """The shift of the layer for samples using directions ``k [B]`` at magnitudes ``t [B]``
        (structured, differentiable in the coefficients; see the module docstring)."""
        if self.basis_kind == "svd":
            dt = self._u.dtype
            c = self.coeffs.to(dt)
            return LayerShift.svd(self.info.name, self._u, self._s, self._vh, t.to(dt), c, k)
        deltas = self.unit_deltas()
        return LayerShift.split(self.info.name, deltas, t.to(deltas.dtype), k)

    @differentiates
    def train_step(self) -> dict[str, float]:
        """One optimisation step on a fresh batch (seeded by ``config.seed`` and the step count):
        the activations before the layer are computed once for both images of each pair, the
        layer runs its fused strategy for the structured shift, and each parameter is updated
        inside the backward pass as soon as its gradient is complete
        (:class:`~navcuda.discover.adam_in_backward.InBackwardAdam`: the gradients are never all
        alive at once). Returns the step's statistics."""
        return self._step(official=False)

    @differentiates
    def reference_step(self) -> dict[str, float]:
        """The same step in the official code's arrangement (yandex-research/navigan): both
        images rendered by full syntheses from ``w``, the shifted one with its per-sample
        kernels materialised (``conv_route("legacy")``), nothing reused, every gradient computed
        before one Adam step. Same batch, loss and update as :meth:`train_step` (up to float
        rounding): the reference of the benchmarks."""
        return self._step(official=True)

    def _batch(self) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """The step's batch ``(inputs, k [B], t [B])``, from the seed and the step count only
        (the same on every rank of a distributed run, which takes its share of it)."""
        cfg, g = self.config, self.generator
        dev = g.device
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step_count + 1)
        inputs = g.sample(cfg.batch_size, gen, truncation_psi=cfg.truncation_psi, label=cfg.label)
        k = torch.randint(cfg.k, (cfg.batch_size,), generator=gen).to(dev)
        mag = self.t_min + (self.t_max - self.t_min) * torch.rand(cfg.batch_size, generator=gen)
        sign = torch.where(torch.rand(cfg.batch_size, generator=gen) < 0.5, -1.0, 1.0)
        return inputs, k, (mag * sign).to(dev)

    def _step(self, official: bool) -> dict[str, float]:
        cfg, g = self.config, self.generator
        inputs, k, t = self._batch()
        if not official and dist.is_active():  # several processes: DDP over the batch's shares
            from navcuda.discover.ddp import DDPStep

            self._ddp = self._ddp or DDPStep(self)
            stats = self._ddp.step(inputs, k, t)
            self.step_count += 1
            stats = {"step": self.step_count, **stats}
            self.history.append(stats)
            return stats
        with frozen(g):
            if official:
                with g.official_route():
                    with torch.no_grad():
                        original = g.render(inputs)
                    shifted = g.render(inputs, self.shift(k, t))
            else:
                with torch.no_grad():
                    state = g.split(inputs, self.info.name)
                    original = g.resume(state)
                shifted = g.resume(state, self.shift(k, t))
        rdtype = self._reconstructor_dtype  # (a float64 generator feeds a float32 network)
        logits, t_hat = self.reconstructor(original.to(rdtype), shifted.to(rdtype))
        ce = F.cross_entropy(logits, k)
        t_err = (t_hat - t / self.t_max).abs().mean()
        loss = ce + cfg.t_weight * t_err
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {self.step_count}: {float(loss)}")
        self.optimizer.zero_grad()
        if official:  # the official update: every gradient first, then one Adam step
            loss.backward()
            self.optimizer.step()
        else:  # each parameter updated as soon as its gradient is complete, then freed
            with self.optimizer.updating():
                loss.backward()
        self.step_count += 1
        stats = {
            "step": self.step_count,
            "loss": loss.item(),
            "ce": ce.item(),
            "accuracy": (logits.argmax(1) == k).float().mean().item(),
            "t_error": t_err.item(),
        }
        self.history.append(stats)
        return stats

    def run(
        self,
        steps: int | None = None,
        checkpoint_path: str | os.PathLike | None = None,
        checkpoint_every: int = 250,
        progress: bool = True,
    ) -> list[dict[str, float]]:
        """Train ``steps`` more steps (default: up to ``config.steps`` in total).

        Early stop: with ``config.patience > 0``, stops when the running accuracy (EMA over
        ~50 steps) has not improved by 0.5 % for ``patience`` steps. Ctrl-C stops cleanly.
        """
        total = self.config.steps - self.step_count if steps is None else steps
        done: list[dict[str, float]] = []
        running, best, since = None, -1.0, 0
        bar = tqdm(total=max(total, 0), desc=self.method, unit="step",
                   disable=not progress or not dist.is_rank0())  # fmt: skip
        try:
            for _ in range(max(total, 0)):
                s = self.train_step()
                done.append(s)
                running = (
                    s["accuracy"] if running is None else 0.98 * running + 0.02 * s["accuracy"]
                )
                bar.update(1)
                bar.set_postfix(acc=f"{running:.3f}", t_err=f"{s['t_error']:.3f}")
                if checkpoint_path and self.step_count % checkpoint_every == 0:
                    self.save(checkpoint_path)
                if self.config.patience > 0:
                    if running > best + 0.005:
                        best, since = running, 0
                    else:
                        since += 1
                        if since >= self.config.patience:
                            bar.write(f"plateau: stopping at step {self.step_count}")
                            break
        except KeyboardInterrupt:
            bar.write("interrupted: keeping the directions learned so far")
        finally:
            bar.close()
            if checkpoint_path:
                self.save(checkpoint_path)
        return done

    # ------------------------------------------------------------------ results
    def direction_set(
        self, calibrate: bool = True, target_rms: float | None = None
    ) -> DirectionSet:
        """The learned directions as a :class:`DirectionSet` (unit norm, calibrated amplitudes)."""
        from navcuda.discover.calibrate import DEFAULT_TARGET_RMS, calibrate_amplitudes

        target = DEFAULT_TARGET_RMS if target_rms is None else target_rms
        with torch.no_grad():
            if self.basis_kind == "svd":
                c = self.coeffs / self.coeffs.norm(dim=1, keepdim=True)
                coeffs, basis = c.detach().float().cpu(), "svd"
            else:
                coeffs, basis = self.unit_deltas().detach().float().cpu(), "weight"
        last = self.history[-50:]
        ds = DirectionSet(
            layer=self.info.name,
            basis=basis,
            coefficients=coeffs,
            amplitudes=torch.full((coeffs.shape[0],), self.t_max),
            method=self.method,
            weight_shape=self.info.weight_shape,
            names=[f"{self.method}{i}" for i in range(coeffs.shape[0])],
            fingerprint=self.generator.fingerprint(),
            model=self.generator.architecture,
            hparams={**asdict(self.config), "t_max": self.t_max, "t_min": self.t_min},
            seed=self.config.seed,
            extra={
                "steps": self.step_count,
                "final_accuracy": sum(h["accuracy"] for h in last) / max(len(last), 1),
                "final_t_error": sum(h["t_error"] for h in last) / max(len(last), 1),
            },
        )
        if calibrate:
            ds.amplitudes = calibrate_amplitudes(
                self.generator,
                list(ds),
                target=target,
                seed=self.config.seed,
                label=self.config.label,
            )
        return ds

    # -------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": "navcuda-optimize",
            "version": 1,
            "layer": self.info.name,
            "method": self.method,
            "config": asdict(self.config),
            "coeffs": self.coeffs.detach().cpu(),
            "reconstructor": self.reconstructor.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step_count,
            "history": self.history,
            "fingerprint": self.generator.fingerprint(),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write a resumable checkpoint atomically, with the checksum of its tensors (on rank 0
        only in a distributed run: the state is the same on every rank)."""
        from navcuda.training import atomic_torch_save

        if not dist.is_rank0():
            return Path(path)
        return atomic_torch_save(self.state_dict(), path)

    def load_state(self, path: str | os.PathLike) -> None:
        """Resume from :meth:`save`'s file (same generator, layer, basis and config).

        Its tensors are checked against the checksum :meth:`save` records (``ValueError``: the
        file is damaged); files written before checksums load with a note.
        """
        from navcuda.io.checksum import verify_state_checksum

        p = Path(path)
        # distributed: rank 0 wrote it, rank 0 reads it for every rank
        state = dist.from_rank0(lambda: torch.load(p, map_location="cpu", weights_only=True))
        if not isinstance(state, dict) or state.get("format") != "navcuda-optimize":
            raise ValueError(f"{p} is not a navcuda optimisation checkpoint")
        verify_state_checksum(
            state, p, ValueError, "optimisation checkpoint", "delete it to start over"
        )
        if state["layer"] != self.info.name or state["fingerprint"] != self.generator.fingerprint():
            raise ValueError(f"{p} was made for another model or layer ({state['layer']})")
        if tuple(state["coeffs"].shape) != tuple(self.coeffs.shape):
            raise ValueError(
                f"{p}: direction matrix {list(state['coeffs'].shape)} does not match "
                f"{list(self.coeffs.shape)}"
            )
        with torch.no_grad():
            self.coeffs.copy_(state["coeffs"])
        self.reconstructor.load_state_dict(state["reconstructor"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count = int(state["step"])
        self.history = list(state["history"])


def discover_optimize(
    generator: ShiftableGenerator,
    layer: int | str,
    k: int = 64,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    calibrate: bool = True,
    progress: bool = True,
    **hparams: Any,
) -> DirectionSet:
    """Run the optimisation method (see :class:`OptimizeConfig` for the hyper-parameters).

    With ``checkpoint``, progress is saved there and an existing file is resumed.
    """
    hparams = P.check_params("optimize", hparams)  # named errors, not OptimizeConfig's
    cfg = OptimizeConfig(k=k, seed=seed, **hparams)
    opt = DirectionOptimizer(generator, layer, cfg)
    if checkpoint is not None and dist.from_rank0(Path(checkpoint).is_file):
        opt.load_state(checkpoint)
    opt.run(checkpoint_path=checkpoint, progress=progress)
    return opt.direction_set(calibrate=calibrate)


#: The fields of :class:`OptimizeConfig` but ``k`` and ``seed``, as declared parameters (shared
#: with the hybrid method, which passes them on too).
CONFIG_PARAMS = {
    "steps": P.integer("optimisation steps in total", 0),
    "batch_size": P.integer("pairs per step", 1),
    "lr": P.number("Adam learning rate", 0, lo_open=True),
    "t_max_rel": P.number("largest shift T, relative to the layer's kernel norm", 0, lo_open=True),
    "t_min_rel": P.number("smallest shift, relative to the kernel norm (< t_max_rel)", 0),
    "t_weight": P.number("weight of the shift-regression loss", 0),
    "reconstructor_size": P.integer(
        "reconstructor input side (None: min(256, image side))", 1, none_ok=True
    ),
    "checkpoint_stem": P.flag("recompute the reconstructor's stem in the backward"),
    "truncation_psi": P.TRUNCATION,
    "label": P.LABEL,
    "patience": P.integer("stop after this many steps without progress (0: never)", 0),
}

#: ``seed * 1_000_003 + step`` seeds each step and must fit in 64 bits.
OPTIMIZE_SEED = P.integer("seed of the initialisation and of every step's batch", 0, 2**44)

#: The parameters of :func:`discover_optimize` and :class:`OptimizeConfig` (defaults from their
#: signatures; ``--list-params``).
OPTIMIZE_PARAMS = P.declare(
    discover_optimize,
    config=OptimizeConfig,
    k=P.integer("number of directions (the CLI's -k)", 2),
    seed=OPTIMIZE_SEED,
    checkpoint=P.CHECKPOINT,
    calibrate=P.CALIBRATE,
    progress=P.PROGRESS,
    **CONFIG_PARAMS,
)

"""Training a StyleGAN2 generator: non-saturating loss, lazy R1, EMA generator, resumable.

The recipe of StyleGAN2 (config F without path-length regularisation) at small scale: Adam with
``betas=(0, 0.99)``, R1 on real images every ``r1_interval`` steps (lazy regularisation, with the
optimizer's lr and betas corrected accordingly), an exponential moving average of the generator's
weights with a half-life given in images, bfloat16 autocast on CUDA.

Every step draws its randomness from a generator seeded by ``(seed, step)``, and the global RNG is
reseeded per step for the generator's noise inputs, so a run resumed from a checkpoint continues
bit for bit as if it had never stopped (on the same device and thread count). Checkpoints are
written atomically.
"""

from __future__ import annotations

import copy
import math
import numbers
import os
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from navcuda._checks import is_int, positive_int
from navcuda.grad_mode import differentiates
from navcuda.io.atomic import atomic_path
from navcuda.io.checksum import CHECKSUM_KEY, state_checksum, verify_state_checksum
from navcuda.models.discriminator import Discriminator
from navcuda.models.stylegan2 import Generator, GeneratorConfig
from navcuda.models.stylegan2_layers import ModulatedConv2d

__all__ = [
    "TrainConfig",
    "Trainer",
    "RealSampler",
    "export_generator",
    "read_training_checkpoint",
]

#: ``sampler(n, generator) -> images [n, C, R, R]`` in [-1, 1].
RealSampler = Callable[[int, torch.Generator], torch.Tensor]


@dataclass
class TrainConfig:
    """Hyper-parameters of GAN training (defaults: the recipe of the bundled model).

    ``kernel_decay``: decoupled weight decay of the generator's modulated conv kernels, per step
    ``W <- W (1 - lr kernel_decay)`` after Adam's update (default 0: none). It was meant to wear
    away the random initialisation, which the bundled model's kernels (trained without it) still
    are by ~85-90 % of their energy (issue 25). But demodulation makes a kernel's scale
    irrelevant to the forward pass, so the decay's only effect is a growing effective step
    ``lr / |W|``: at ``kernel_decay=1`` the kernels shrank to ~1.5 % of their initial size and
    training diverged after ~1,700 steps. Prefer ``kernel_init``.

    ``kernel_init``: scale of those kernels at initialisation (default 1: N(0, 1), the official
    equalized-lr init). The generator computes the same function at any scale; a smaller one
    makes Adam's steps (~lr per weight) larger relative to the kernels early on, so that what
    training learns outweighs the random start sooner, while the kernels' growth lowers the
    effective step as training goes (no decay needed)."""

    batch_size: int = 16
    lr: float = 0.002
    beta2: float = 0.99
    r1_gamma: float = 0.25
    r1_interval: int = 16
    ema_half_life_images: float = 10_000.0
    seed: int = 0
    amp: bool = True
    kernel_decay: float = 0.0
    kernel_init: float = 1.0

    def __post_init__(self) -> None:
        for name in ("batch_size", "r1_interval"):
            positive_int(getattr(self, name), f"TrainConfig.{name}")
        if not is_int(self.seed):
            raise ValueError(f"TrainConfig.seed must be an integer, got {self.seed!r}")
        if not isinstance(self.amp, bool):
            raise ValueError(f"TrainConfig.amp must be True or False, got {self.amp!r}")
        checks = (
            ("lr", lambda v: v > 0, "a finite number > 0"),
            ("beta2", lambda v: 0 <= v < 1, "a number in [0, 1)"),
            ("r1_gamma", lambda v: v >= 0, "a finite number >= 0"),
            ("ema_half_life_images", lambda v: v >= 0, "a finite number >= 0 (0: no averaging)"),
            ("kernel_decay", lambda v: 0 <= v * self.lr < 1, "a number >= 0 with lr x it < 1"),
            ("kernel_init", lambda v: v > 0, "a finite number > 0"),
        )
        for name, ok, what in checks:
            v = getattr(self, name)
            if not (_is_real(v) and math.isfinite(v) and ok(v)):
                raise ValueError(f"TrainConfig.{name} must be {what}, got {v!r}")


def _is_real(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7_919 + 12_345) % (2**63 - 1)


def atomic_torch_save(obj: object, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename (never a partial file).

    A dict is saved with a ``"checksum"`` entry added (replaced if present): the SHA-256 of every
    tensor nested in its other entries (:func:`navcuda.io.checksum.state_checksum`), which
    :func:`read_training_checkpoint` and the optimisation checkpoints verify on load.
    """
    if isinstance(obj, dict):
        obj = {**obj, CHECKSUM_KEY: state_checksum(obj)}
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


class Trainer:
    """Owns G, D, the EMA generator and their optimizers; :meth:`run` trains for some steps."""

    def __init__(
        self,
        g_config: GeneratorConfig,
        sampler: RealSampler,
        config: TrainConfig | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.config = config or TrainConfig()
        self.g_config = g_config
        self.sampler = sampler
        self.device = torch.device(device)
        c = self.config
        torch.manual_seed(c.seed)
        self.G = Generator(g_config).to(self.device).train()
        self.D = Discriminator(g_config).to(self.device).train()
        # kernel_init's and kernel_decay's parameters: the demodulated convs (a toRGB's scale
        # is its output's)
        self._kernels = [
            m.weight for m in self.G.modules() if isinstance(m, ModulatedConv2d) and m.demodulate
        ]
        if c.kernel_init != 1.0:
            with torch.no_grad():
                torch._foreach_mul_(self._kernels, c.kernel_init)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.g_opt = torch.optim.Adam(self.G.parameters(), lr=c.lr, betas=(0.0, c.beta2))
        ratio = c.r1_interval / (c.r1_interval + 1)
        self.d_opt = torch.optim.Adam(
            self.D.parameters(), lr=c.lr * ratio, betas=(0.0, c.beta2**ratio)
        )
        self.step = 0
        self.history: list[dict[str, float]] = []

    # ----------------------------------------------------------------- one step
    def _autocast(self):
        enabled = self.config.amp and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _z(self, gen: torch.Generator) -> torch.Tensor:
        z = torch.randn(self.config.batch_size, self.g_config.z_dim, generator=gen)
        return z.to(self.device)

    @differentiates
    def train_step(self) -> dict[str, float]:
        """One D step (plus R1 every ``r1_interval`` steps), one G step, one EMA update."""
        c = self.config
        seed = _step_seed(c.seed, self.step)
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # the generator's random noise inputs
        real = self.sampler(c.batch_size, gen).to(self.device)

        # Discriminator: softplus(D(fake)) + softplus(-D(real)).
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        with self._autocast():
            fake = self.G(self._z(gen), noise_mode="random")
            d_fake = self.D(fake.detach()).float()
            d_real = self.D(real).float()
        d_loss = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
        self.d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_opt.step()
        stats = {
            "d_loss": d_loss.item(),
            "d_real": d_real.mean().item(),
            "d_fake": d_fake.mean().item(),
            "d_acc": float(((d_real > 0).float().mean() + (d_fake < 0).float().mean()) / 2),
        }

        # Lazy R1 on real images.
        if self.step % c.r1_interval == 0:
            real_ = real.detach().requires_grad_(True)
            out = self.D(real_)
            (grad,) = torch.autograd.grad(out.sum(), real_, create_graph=True)
            r1 = grad.square().sum(dim=(1, 2, 3)).mean()
            self.d_opt.zero_grad(set_to_none=True)
            (c.r1_gamma / 2 * r1 * c.r1_interval + 0 * out[0, 0]).backward()
            self.d_opt.step()
            stats["r1"] = r1.item()

        # Generator: softplus(-D(G(z))).
        self.G.requires_grad_(True)
        self.D.requires_grad_(False)
        with self._autocast():
            g_out = self.D(self.G(self._z(gen), noise_mode="random")).float()
        g_loss = F.softplus(-g_out).mean()
        self.g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_opt.step()
        if c.kernel_decay:
            with torch.no_grad():
                torch._foreach_mul_(self._kernels, 1.0 - c.lr * c.kernel_decay)
        stats["g_loss"] = g_loss.item()

        self._update_ema()
        self.step += 1
        stats["step"] = self.step
        self.history.append(stats)
        return stats

    @torch.no_grad()
    def _update_ema(self) -> None:
        beta = 0.5 ** (self.config.batch_size / max(self.config.ema_half_life_images, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
            p_ema.lerp_(p, 1.0 - beta)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
            b_ema.copy_(b)

    # ---------------------------------------------------------------------- run
    def run(
        self,
        steps: int | None = None,
        max_seconds: float | None = None,
        checkpoint_path: str | os.PathLike | None = None,
        checkpoint_every: int | None = 200,
        sample_dir: str | os.PathLike | None = None,
        sample_every: int | None = 500,
        progress: bool = True,
    ) -> list[dict[str, float]]:
        """Train until ``steps`` more steps are done or ``max_seconds`` pass (whichever is first).

        Checkpoints (atomic) every ``checkpoint_every`` steps and at the end (None: only at the
        end); sample grids of the EMA generator every ``sample_every`` steps and at the end of a
        run that trained any step (None: none). Ctrl-C stops after writing a checkpoint (and the
        final grid). ``steps`` must be an integer >= 0 and ``max_seconds`` a
        finite number >= 0; the intervals positive integers or None (``ValueError`` otherwise).
        """
        if steps is None and max_seconds is None:
            raise ValueError("give steps, max_seconds or both")
        if steps is not None and (not is_int(steps) or steps < 0):
            raise ValueError(f"steps must be an integer >= 0 (or None), got {steps!r}")
        if max_seconds is not None and not (
            _is_real(max_seconds) and math.isfinite(max_seconds) and max_seconds >= 0
        ):
            raise ValueError(
                f"max_seconds must be a finite number >= 0 (or None for no time limit), got "
                f"{max_seconds!r}"
            )
        for name, every in (("checkpoint_every", checkpoint_every), ("sample_every", sample_every)):
            positive_int(every, name, none_ok=True, note="(steps between writes)")
        start, done = time.monotonic(), []
        total = steps if steps is not None else None
        bar = tqdm(total=total, disable=not progress, desc="train", unit="step")
        try:
            while (steps is None or len(done) < steps) and (
                max_seconds is None or time.monotonic() - start < max_seconds
            ):
                stats = self.train_step()
                done.append(stats)
                bar.update(1)
                bar.set_postfix(
                    d=f"{stats['d_loss']:.3f}",
                    g=f"{stats['g_loss']:.3f}",
                    acc=f"{stats['d_acc']:.2f}",
                )
                if checkpoint_path and checkpoint_every and self.step % checkpoint_every == 0:
                    self.save(checkpoint_path)
                if sample_dir and sample_every and self.step % sample_every == 0:
                    self.save_samples(Path(sample_dir) / f"step{self.step:07d}.png")
        except KeyboardInterrupt:
            bar.write("interrupted: writing a checkpoint before stopping")
        finally:
            bar.close()
            if checkpoint_path:
                self.save(checkpoint_path)
        if sample_dir and sample_every and done and self.step % sample_every:
            # the end of the run (steps, max_seconds or Ctrl-C) between two periodic grids
            self.save_samples(Path(sample_dir) / f"step{self.step:07d}.png")
        return done

    @torch.no_grad()
    def save_samples(self, path: str | os.PathLike, n: int = 16, seed: int = 123) -> Path:
        """A grid of EMA-generator samples for fixed latents (truncation 1)."""
        from navcuda.rendering import save_grid

        z = torch.randn(n, self.g_config.z_dim, generator=torch.Generator().manual_seed(seed))
        return save_grid(self.G_ema(z.to(self.device)), path, nrow=int(math.sqrt(n)))

    # -------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {
            "format": "navcuda-training",
            "version": 1,
            "step": self.step,
            "g_config": self.g_config.to_dict(),
            "train_config": asdict(self.config),
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "g_opt": self.g_opt.state_dict(),
            "d_opt": self.d_opt.state_dict(),
            "history": self.history,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write a resumable checkpoint atomically."""
        return atomic_torch_save(self.state_dict(), path)

    @classmethod
    def resume(
        cls, path: str | os.PathLike, sampler: RealSampler, device: str | torch.device = "cpu"
    ) -> Trainer:
        """Rebuild a trainer from :meth:`save`'s file (read with ``weights_only=True``).

        Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file for a
        truncated, corrupt or foreign one.
        """
        p = Path(path)
        state = read_training_checkpoint(p, map_location=device)
        try:
            tr = cls(
                GeneratorConfig.from_dict(state["g_config"]),
                sampler,
                TrainConfig(**state["train_config"]),
                device,
            )
            tr.G.load_state_dict(state["G"])
            tr.D.load_state_dict(state["D"])
            tr.G_ema.load_state_dict(state["G_ema"])
            tr.g_opt.load_state_dict(state["g_opt"])
            tr.d_opt.load_state_dict(state["d_opt"])
            tr.step = int(state["step"])
            tr.history = list(state["history"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise _unusable(p, e) from e
        return tr


_RESTART = "delete it or pass --restart to start over"
_RETRAIN = "train again to write a new one (--restart starts over)"


def _unusable(p: Path, e: Exception, hint: str = _RESTART) -> ValueError:
    what = f"missing entry {e}" if isinstance(e, KeyError) else _first_line(e)
    return ValueError(f"{str(p)!r} is not a usable navcuda training checkpoint ({what}); {hint}")


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or ['(no message)'])[0]}"


def read_training_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", hint: str = _RESTART
) -> dict:
    """The state dict of a :meth:`Trainer.save` file, read with ``weights_only=True``.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file when it is
    empty, truncated, corrupt (a zip member failing its CRC-32 check, tensors not matching the
    recorded checksum) or not a navcuda training checkpoint; ``hint`` (what to do about it) ends
    the message. Checkpoints written before checksums were recorded load with a note.
    """
    from navcuda.models.checkpoints import load_torch_file, zip_crc_problem

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"training checkpoint not found: {p}")

    def unreadable(why: str) -> ValueError:
        return ValueError(
            f"{str(p)!r} is not a readable training checkpoint (truncated or corrupt: {why}); "
            f"{hint}"
        )

    if p.stat().st_size == 0:
        raise unreadable("the file is empty")
    if zipfile.is_zipfile(p) and (problem := zip_crc_problem(p)) is not None:
        raise unreadable(problem)
    try:
        state = load_torch_file(p, map_location=map_location)
    except Exception as e:  # RuntimeError (zip), UnpicklingError, EOFError, ...
        raise unreadable(_first_line(e)) from e
    if not isinstance(state, dict) or state.get("format") != "navcuda-training":
        found = f"format {state.get('format')!r}" if isinstance(state, dict) else "not a dict"
        raise ValueError(
            f"{str(p)!r} is not a navcuda training checkpoint ({found}, expected "
            f"'navcuda-training'); {hint}"
        )
    verify_state_checksum(state, p, ValueError, "training checkpoint", hint)
    return state


def export_generator(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    w_avg_samples: int = 10_000,
    extra: dict | None = None,
) -> Path:
    """Write the EMA generator of a training checkpoint as a navcuda ``.safetensors`` file.

    ``w_avg`` is recomputed over ``w_avg_samples`` seeded latents; the file's metadata records
    the training recipe (configs, step, last losses) plus ``extra``.
    """
    from navcuda.models.checkpoints import save_generator

    p = Path(checkpoint)
    state = read_training_checkpoint(p, hint=_RETRAIN)
    try:
        g = Generator(GeneratorConfig.from_dict(state["g_config"]))
        g.load_state_dict(state["G_ema"])
        last = state["history"][-100:]
        recipe = {
            "trained_steps": state["step"],
            "images_seen": state["step"] * state["train_config"]["batch_size"],
            "train_config": state["train_config"],
            "last_100_steps": {
                k: sum(h[k] for h in last) / max(len(last), 1)
                for k in ("d_loss", "g_loss", "d_acc")
            },
            "torch": torch.__version__,
        }
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise _unusable(p, e, _RETRAIN) from e
    recipe.update(extra or {})
    g.update_w_avg(w_avg_samples)
    return save_generator(g.eval(), output, metadata={"training": recipe})

"""The toy world's factor regressor: a small CNN that reads the 14 ground-truth factors off images.

:class:`FactorRegressor` maps images ``[B, 3, H, W]`` in ``[-1, 1]`` (square, ``32 <= H <= 256``;
resized to 64x64 with antialiased bilinear interpolation) to predictions of the toy world's
factors (:data:`navcuda.toyworld.FACTOR_NAMES`, normalised units, nominally ``[0, 1]``).
:meth:`FactorRegressor.features` gives its penultimate features ``[B, 192]``: the embedding of the
toy-FD (:func:`navcuda.metrics.frechet.toy_fd`, the offline stand-in for FID) and, with
:meth:`FactorRegressor.feature_maps`, of a factor-aware perceptual distance
(:class:`navcuda.metrics.perceptual.FeatureLPIPS`).

Architecture (about 0.29 M parameters, no normalisation layers, so a prediction never depends on the
rest of its batch)::

    3 -> 24 (s2, 32x32) -> 48 (s2, 16x16) -> 48 -> 96 (s2, 8x8) -> 96 -> 64 (s2, 4x4)
    flatten 1024 -> 192 (penultimate features) -> 14

3x3 convolutions with SiLU; the stride-2 convolutions halve the resolution. The flattened 4x4 map
keeps *where* things are (eye spacing, mouth width, hair length are positions), which a global
average pool would blur.

Training (:func:`train_factor_regressor`): fresh toy-world samples every step (infinite data from a
seeded stream), MSE on the raw outputs, Adam with a cosine learning-rate decay, and a little
Gaussian pixel noise (per-sample standard deviation uniform in ``[0, noise_std]``) so that the
regressor tolerates the small artefacts of GAN samples. The held-out R² per factor is measured on
fresh samples from a separate seed and stored with the recipe in ``factor_regressor.json``.

The trained weights ship as ``navcuda/data/factor_regressor.safetensors``;
:func:`load_factor_regressor` loads them (or any file written by :func:`save_factor_regressor`) and
validates the format.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from navcuda.grad_mode import differentiates
from navcuda.toyworld import FACTOR_NAMES, NUM_FACTORS, render, sample_factors

__all__ = [
    "BUNDLED_REGRESSOR",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "FactorRegressor",
    "FactorRegressorError",
    "INPUT_RESOLUTION",
    "bundled_regressor_report",
    "evaluate_factor_regressor",
    "load_factor_regressor",
    "r2_per_factor",
    "save_factor_regressor",
    "train_factor_regressor",
]

#: File name of the bundled weights inside the package's ``data`` folder (the report beside it has
#: the same stem and a ``.json`` suffix).
BUNDLED_REGRESSOR = "factor_regressor.safetensors"
FORMAT_NAME = "navcuda-factor-regressor"
FORMAT_VERSION = 1
#: The regressor works at 64x64; inputs from 32 to 256 px are resized to this.
INPUT_RESOLUTION = 64
MIN_INPUT_RESOLUTION = 32
MAX_INPUT_RESOLUTION = 256

_DEFAULT_ARCH = {"channels": [24, 48, 48, 96, 96, 48], "strides": [2, 2, 1, 2, 1, 2], "dim": 128}


class FactorRegressorError(ValueError):
    """A factor-regressor file is missing entries, has the wrong shapes or another format."""


class FactorRegressor(nn.Module):
    """Small CNN: images ``[B, 3, H, W]`` in ``[-1, 1]`` -> factor predictions ``[B, 14]``.

    ``forward(x)`` clamps the predictions to ``[0, 1]``; :meth:`predict_raw` returns them
    unclamped (use it for slopes, e.g. in :mod:`navcuda.metrics.factor_scores`, where a clamp would
    flatten the response near the ends of a factor's range). ``features(x)`` is the penultimate
    layer ``[B, dim]``; ``feature_maps(x)`` every conv block's output plus the penultimate
    features.
    """

    def __init__(
        self,
        channels: tuple[int, ...] | list[int] = tuple(_DEFAULT_ARCH["channels"]),
        strides: tuple[int, ...] | list[int] = tuple(_DEFAULT_ARCH["strides"]),
        dim: int = _DEFAULT_ARCH["dim"],
        num_factors: int = NUM_FACTORS,
    ) -> None:
        super().__init__()
        if len(channels) != len(strides) or not channels:
            raise ValueError("channels and strides must be non-empty and of the same length")
        if any(s not in (1, 2) for s in strides):
            raise ValueError(f"strides must be 1 or 2, got {list(strides)}")
        self.channels = [int(c) for c in channels]
        self.strides = [int(s) for s in strides]
        self.dim = int(dim)
        self.num_factors = int(num_factors)
        final = INPUT_RESOLUTION // 2 ** sum(s == 2 for s in self.strides)
        if final < 1:
            raise ValueError("too many stride-2 blocks for a 64x64 input")
        self.final_resolution = final
        convs, in_c = [], 3
        for c, s in zip(self.channels, self.strides, strict=True):
            convs.append(nn.Conv2d(in_c, c, 3, stride=s, padding=1))
            in_c = c
        self.convs = nn.ModuleList(convs)
        self.fc = nn.Linear(in_c * final * final, self.dim)
        self.head = nn.Linear(self.dim, self.num_factors)

    # ---------------------------------------------------------------- config
    def arch(self) -> dict:
        """The constructor arguments (JSON-able)."""
        return {
            "channels": list(self.channels),
            "strides": list(self.strides),
            "dim": self.dim,
            "num_factors": self.num_factors,
        }

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---------------------------------------------------------------- forward
    @staticmethod
    def prepare(x: torch.Tensor) -> torch.Tensor:
        """Check ``x [B, 3, H, W]`` (square, 32..256 px, floating) and resize it to 64x64."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a tensor of images, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"images must be a floating tensor in [-1, 1], got {x.dtype}")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected RGB images [B, 3, H, W], got shape {list(x.shape)}")
        h, w = x.shape[-2:]
        if h != w:
            raise ValueError(f"expected square images, got {h}x{w}")
        if not MIN_INPUT_RESOLUTION <= h <= MAX_INPUT_RESOLUTION:
            raise ValueError(
                f"image side must be in [{MIN_INPUT_RESOLUTION}, {MAX_INPUT_RESOLUTION}] px, "
                f"got {h}"
            )
        if h != INPUT_RESOLUTION:
            x = F.interpolate(
                x,
                size=(INPUT_RESOLUTION, INPUT_RESOLUTION),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        return x

    def _trunk(self, x: torch.Tensor, keep: bool = False):
        x = self.prepare(x).to(self.fc.weight.dtype)
        maps = []
        for conv in self.convs:
            x = F.silu(conv(x))
            if keep:
                maps.append(x)
        feats = F.silu(self.fc(x.flatten(1)))
        return feats, maps

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``[B, dim]``."""
        return self._trunk(x)[0]

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every conv block's output ``[B, C, h, w]`` and the penultimate features ``[B, dim]``
        (the multi-layer features :class:`~navcuda.metrics.perceptual.FeatureLPIPS` expects)."""
        feats, maps = self._trunk(x, keep=True)
        return [*maps, feats]

    def linearize_feature_maps(self, lin) -> None:
        """Record :meth:`feature_maps` on a :class:`~navcuda.metrics.linearize.Linearizer`
        (shared-primal Gauss-Newton products of the ``"toy-regressor"`` metric)."""
        dtype = self.fc.weight.dtype
        lin.linear(lambda x: self.prepare(x).to(dtype))
        for conv in self.convs:
            lin.conv2d(conv)
            lin.silu()
            lin.tap()
        lin.linear(lambda x: x.flatten(1))
        lin.linear_layer(self.fc)
        lin.silu()
        lin.tap()

    def predict_raw(self, x: torch.Tensor) -> torch.Tensor:
        """Unclamped factor predictions ``[B, num_factors]`` (the training target's scale)."""
        return self.head(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Factor predictions ``[B, num_factors]`` clamped to ``[0, 1]``."""
        return self.predict_raw(x).clamp(0.0, 1.0)


# ------------------------------------------------------------------------ files
def _bundled_path():
    return resources.files("navcuda") / "data" / BUNDLED_REGRESSOR


def save_factor_regressor(
    model: FactorRegressor, path: str | os.PathLike, report: dict | None = None
) -> Path:
    """Write ``model`` as safetensors (atomically), with its architecture and the checksum of
    its tensors in the metadata.

    With ``report``, also write it as JSON beside the weights (same stem, ``.json``).
    """
    from navcuda.io.atomic import atomic_path, atomic_save_safetensors
    from navcuda.io.checksum import CHECKSUM_KEY, tensor_checksum

    path = Path(path)
    tensors = {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()
    }
    meta = {
        "format": FORMAT_NAME,
        "version": str(FORMAT_VERSION),
        "arch": json.dumps(model.arch()),
        "factor_names": json.dumps(list(FACTOR_NAMES)),
        "input_resolution": str(INPUT_RESOLUTION),
        CHECKSUM_KEY: tensor_checksum(tensors),
    }
    atomic_save_safetensors(tensors, path, metadata=meta)
    if report is not None:
        with atomic_path(path.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    return path


def load_factor_regressor(
    path: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> FactorRegressor:
    """Load a factor regressor (default: the bundled ``navcuda/data/factor_regressor.safetensors``).

    Returns an ``eval()`` model on ``device`` with gradients disabled for its parameters.
    Raises ``FileNotFoundError`` naming the missing file, :class:`FactorRegressorError` when the
    file is not a factor-regressor file of this version or does not match the toy world's factors.
    """
    from safetensors import safe_open

    from navcuda.io.checksum import CHECKSUM_KEY, verify_checksum

    if path is None:
        res = _bundled_path()
        if not res.is_file():
            raise FileNotFoundError(
                f"the bundled factor regressor navcuda/data/{BUNDLED_REGRESSOR} is missing from "
                "this install; train one with navcuda.metrics.factor_regressor."
                "train_factor_regressor(output=...) and pass its path"
            )
        with resources.as_file(res) as p:
            return load_factor_regressor(p, device)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"factor-regressor file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except FactorRegressorError:
        raise
    except Exception as e:  # safetensors raises several types for a corrupt header
        raise FactorRegressorError(f"{path}: not a readable safetensors file ({e})") from e
    if meta.get("format") != FORMAT_NAME:
        raise FactorRegressorError(
            f"{path}: format {meta.get('format')!r}, expected {FORMAT_NAME!r}"
        )
    if meta.get("version") != str(FORMAT_VERSION):
        raise FactorRegressorError(
            f"{path}: format version {meta.get('version')!r}, this navcuda reads {FORMAT_VERSION}"
        )
    try:
        arch = json.loads(meta["arch"])
        names = json.loads(meta["factor_names"])
    except (KeyError, json.JSONDecodeError) as e:
        raise FactorRegressorError(f"{path}: bad or missing metadata entry ({e})") from e
    if list(names) != list(FACTOR_NAMES):
        raise FactorRegressorError(
            f"{path}: trained for factors {names}, the toy world has {list(FACTOR_NAMES)}"
        )
    try:
        model = FactorRegressor(**arch)
    except (TypeError, ValueError) as e:
        raise FactorRegressorError(f"{path}: bad architecture {arch} ({e})") from e
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise FactorRegressorError(f"{path}: missing tensors {missing}, unexpected {extra}")
    for k, v in expected.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise FactorRegressorError(
                f"{path}: tensor {k!r} has shape {list(tensors[k].shape)}, expected {list(v.shape)}"
            )
        if not torch.isfinite(tensors[k]).all():
            raise FactorRegressorError(f"{path}: tensor {k!r} has NaN or Inf values")
    verify_checksum(
        meta.get(CHECKSUM_KEY), tensors, path, FactorRegressorError, "factor regressor",
        "train it again (navcuda.metrics.factor_regressor.train_factor_regressor) or reinstall "
        "navcuda for the bundled one",
    )  # fmt: skip
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    model.requires_grad_(False)
    return model.to(device).eval()


def bundled_regressor_report() -> dict:
    """The bundled regressor's training report (``factor_regressor.json``: recipe, R² each)."""
    res = resources.files("navcuda") / "data" / Path(BUNDLED_REGRESSOR).with_suffix(".json").name
    if not res.is_file():
        raise FileNotFoundError(f"navcuda/data/{res.name} is missing from this install")
    return json.loads(res.read_text())


# ------------------------------------------------------------------------ evaluation
def r2_per_factor(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Coefficient of determination ``1 - SSE/SST`` per column (float64, ``[F]``)."""
    pred, target = pred.double(), target.double()
    sse = ((pred - target) ** 2).sum(0)
    sst = ((target - target.mean(0)) ** 2).sum(0)
    return 1.0 - sse / sst


@torch.no_grad()
def evaluate_factor_regressor(
    model: FactorRegressor,
    n_samples: int = 2000,
    seed: int = 1_000_003,
    batch_size: int = 250,
    resolution: int = 64,
) -> dict[str, float]:
    """Held-out R² per factor (clamped predictions) on ``n_samples`` fresh toy-world samples."""
    factors = sample_factors(n_samples, seed=seed)
    dev = model.fc.weight.device
    preds = [model(render(f, resolution).to(dev)).cpu() for f in factors.split(batch_size)]
    r2 = r2_per_factor(torch.cat(preds), factors)
    return {name: float(v) for name, v in zip(FACTOR_NAMES, r2, strict=True)}


# ------------------------------------------------------------------------ training
@differentiates
def train_factor_regressor(
    output: str | os.PathLike | None = None,
    steps: int = 4000,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 0.0,
    noise_std: float = 0.03,
    seed: int = 0,
    eval_samples: int = 2000,
    eval_seed: int = 1_000_003,
    num_threads: int | None = 1,
    device: str | torch.device = "cpu",
    progress: bool = True,
    log_every: int = 250,
) -> tuple[FactorRegressor, dict]:
    """Train a :class:`FactorRegressor` on fresh toy-world samples; returns ``(model, report)``.

    Every step draws ``batch_size`` new factor vectors from a stream seeded with ``seed`` and
    renders them at 64x64; the loss is the MSE of the raw predictions. Adam (``lr``, cosine decay
    to 2% of it over ``steps``, 3% linear warm-up). Inputs get Gaussian pixel noise with a
    per-sample standard deviation uniform in ``[0, noise_std]``. After training, R² per factor is
    measured on ``eval_samples`` fresh samples drawn with ``eval_seed`` (disjoint from the training
    stream).

    ``num_threads``: torch intra-op threads while training (restored afterwards; ``None`` leaves
    the setting alone). One thread is the default: these convolutions are small, and with a busy
    machine two threads mostly wait for each other.
    With ``output`` (a ``.safetensors`` path) the weights and the report (``.json`` beside them)
    are written atomically. The report holds the recipe, parameter count, wall time, versions and
    the held-out R² per factor.
    """
    from tqdm.auto import tqdm

    if steps < 1 or batch_size < 2:
        raise ValueError("steps must be >= 1 and batch_size >= 2")
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    try:
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = FactorRegressor().to(device)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        warm = max(1, int(0.03 * steps))

        def lr_at(step: int) -> float:
            if step < warm:
                return lr * (step + 1) / warm
            p = (step - warm) / max(1, steps - warm)
            return lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * p)))

        data_gen = torch.Generator().manual_seed(seed)
        noise_gen = torch.Generator().manual_seed(seed + 1)
        losses: list[float] = []
        bar = tqdm(range(steps), desc="factor regressor", disable=not progress)
        running = None
        for step in bar:
            f = sample_factors(batch_size, generator=data_gen)
            x = render(f, INPUT_RESOLUTION)
            sigma = torch.rand(batch_size, 1, 1, 1, generator=noise_gen) * noise_std
            x = x + sigma * torch.randn(x.shape, generator=noise_gen)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            loss = F.mse_loss(model.predict_raw(x.to(device)), f.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            v = float(loss.detach())
            running = v if running is None else 0.98 * running + 0.02 * v
            if (step + 1) % log_every == 0 or step + 1 == steps:
                losses.append(round(running, 6))
                bar.set_postfix(loss=f"{running:.5f}")
        bar.close()
        train_s = time.perf_counter() - t0
        model.eval().requires_grad_(False)
        r2 = evaluate_factor_regressor(model, eval_samples, eval_seed)
        wall_s = time.perf_counter() - t0
        report = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "arch": model.arch(),
            "num_parameters": model.num_parameters(),
            "recipe": {
                "steps": steps,
                "batch_size": batch_size,
                "optimizer": "Adam",
                "lr": lr,
                "lr_schedule": "3% linear warm-up, cosine decay to 0.02*lr",
                "weight_decay": weight_decay,
                "loss": "MSE on raw (unclamped) predictions",
                "pixel_noise_std": f"per-sample uniform in [0, {noise_std}]",
                "seed": seed,
                "data": "fresh toy-world samples every step (navcuda.toyworld.render, 64x64)",
                "num_threads": num_threads,
                "device": str(device),
            },
            "eval": {
                "n_samples": eval_samples,
                "seed": eval_seed,
                "metric": "R^2 of clamped predictions, per factor",
            },
            "r2": r2,
            "r2_min": min(r2.values()),
            "r2_mean": sum(r2.values()) / len(r2),
            "loss_curve": {"every": log_every, "ema_mse": losses},
            "train_seconds": round(train_s, 1),
            "wall_seconds": round(wall_s, 1),
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "factor_names": list(FACTOR_NAMES),
        }
        if output is not None:
            save_factor_regressor(model, output, report)
        return model, report
    finally:
        if num_threads is not None:
            torch.set_num_threads(old_threads)

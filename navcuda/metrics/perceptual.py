"""Perceptual distances between image batches: LPIPS with a user-supplied backbone, and fallbacks.

Every metric is a :class:`PerceptualMetric` (an ``nn.Module``):

- ``metric(a, b) -> [B]``: distances between two batches of images ``[B, C, H, W]`` in [-1, 1]
  (same shape; optionally resized to ``resize x resize`` first);
- ``metric.features(x)``: the per-layer features, so that the features of fixed images (e.g. the
  unshifted renders of a Hessian computation) are computed once and reused with
  ``metric.distance_from_features(fa, fb)``;
- ``metric.linearize(x0)``: the features' Jacobian at fixed images, for the Gauss-Newton products
  of :mod:`navcuda.hessian` (:mod:`navcuda.metrics.linearize`; every metric here records its
  network once per image and shares that primal across vectors; a custom ``FeatureLPIPS`` does
  when given ``linearize_fn``, otherwise it falls back to forward-mode AD per sample);
- ``metric.name`` and ``metric.describe()`` (a JSON-able dict) to record in result files which
  metric produced a number.

All metrics here are *quadratic in feature differences*: ``d(a, b) = q(phi(a) - phi(b))`` with
``phi`` the (normalised) features and ``q`` a positive semi-definite quadratic form
(``metric.quadratic``; ``metric.is_quadratic`` is True). That is what makes the Gauss-Newton
Hessian-vector product of :mod:`navcuda.hessian` exact at zero shift.

Metrics
-------
``LPIPSMetric`` (``"lpips-vgg"``, ``"lpips-alex"``)
    The official LPIPS v0.1 (the ``lpips`` package): the calibrated linear heads shipped inside the
    ``lpips`` wheel plus the ImageNet backbone, loaded from the torchvision checkpoint file the
    user supplies (``vgg16-397923af.pth`` / ``alexnet-owt-7be5be79.pth``; nothing is downloaded).
    This is the metric of the paper's spectrum recipe. Distances are exactly ``lpips.LPIPS``'s.
``RandomFeatureLPIPS`` (``"random-vgg"``)
    Offline fallback: the same LPIPS-style distance (unit-normalised channel features, squared
    differences, spatial mean, uniform channel weights, summed over layers -- the LPIPS paper's
    "baseline" form) on a VGG-like conv stack with *fixed-seed random* weights. Random conv
    features are a known, reasonable perceptual proxy (the LPIPS paper's random-network baseline
    correlates with human judgements far better than pixel distances), and the network is
    deterministic for a seed on every machine (initialised on the CPU from an explicit
    ``torch.Generator``). Limitations: not calibrated to human judgements; its scale differs from
    LPIPS (do not compare numbers across metrics); the random stack has no notion of semantic
    parts, so it over-weights texture/colour changes relative to structural ones; results obtained
    with it are *not* comparable with the paper's.
``FeatureLPIPS(feature_fn)``
    The same distance on any multi-layer feature extractor ``feature_fn(x) -> list of
    [B, C, H, W] (or [B, C]) tensors`` -- e.g. the toy world's factor-regressor features, which
    measure change along the factors of variation of that world. Its quality is that of the
    supplied features; ``describe()`` records only the ``name`` given to it.
``PixelMSE`` (``"pixel"``)
    Mean squared pixel difference; for tests and as a sanity baseline (not perceptual).

Resizing: ``resize=n`` resizes both images to ``n x n`` with ``resize_mode`` (default
``"bilinear"``, no antialias) before the features. Note that the paper's official spectrum code
resizes with ``F.interpolate``'s default, ``"nearest"``; :class:`navcuda.hessian.PerceptualHessian`
does that resize itself and follows the official choice by default.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from navcuda._checks import positive_int
from navcuda.metrics.linearize import (
    ForwardADLinearization,
    Linearizer,
    MetricLinearization,
    SharedPrimalLinearization,
    norm_plus_eps_normalize,
    smooth_unit_normalize,
)

__all__ = [
    "BACKBONE_FILES",
    "FeatureLPIPS",
    "LINEARIZE_MODES",
    "LPIPSMetric",
    "METRIC_NAMES",
    "PerceptualMetric",
    "PixelMSE",
    "RandomFeatureLPIPS",
    "make_metric",
    "resolve_metric_name",
    "toy_regressor_metric",
]

Features = list[torch.Tensor]

#: The torchvision model-zoo checkpoint files of the LPIPS backbones.
BACKBONE_FILES: dict[str, str] = {
    "vgg": "vgg16-397923af.pth",
    "alex": "alexnet-owt-7be5be79.pth",
}
_TV_CONSTRUCTORS = {"vgg": "vgg16", "alex": "alexnet"}

#: Names accepted by :func:`make_metric`.
METRIC_NAMES = ("lpips-vgg", "lpips-alex", "random-vgg", "toy-regressor", "pixel")

_RESIZE_MODES = ("nearest", "bilinear", "bicubic", "area")

#: ``mode`` of :meth:`PerceptualMetric.linearize`.
LINEARIZE_MODES = ("auto", "shared", "forward")


def _unit_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Smooth unit normalisation over channels: ``x / sqrt(sum_c x^2 + eps^2)`` (bounded
    derivative ``1/eps`` at ``x = 0``, unlike ``x / (|x| + eps)``)."""
    return x * torch.rsqrt(x.square().sum(dim=1, keepdim=True) + eps * eps)


def _spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W] -> [B]`` (sum over channels, mean over space); ``[B, C] -> [B]`` (sum)."""
    if x.ndim == 2:
        return x.sum(dim=1)
    return x.sum(dim=1).flatten(1).mean(dim=1)


class PerceptualMetric(nn.Module):
    """Base class: a distance between image batches, quadratic in feature differences.

    Subclasses implement :meth:`_features` (on already checked and resized images) and
    :meth:`quadratic`. The metric's parameters never require gradients; gradients flow to the
    images.
    """

    name: str = "metric"
    #: ``d(a, b) = quadratic(features(a) - features(b))`` with a PSD quadratic form.
    is_quadratic: bool = True

    def __init__(
        self,
        resize: int | None = None,
        resize_mode: str = "bilinear",
        in_channels: int | None = 3,
    ) -> None:
        super().__init__()
        positive_int(resize, "resize", none_ok=True)
        if resize_mode not in _RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {_RESIZE_MODES}, got {resize_mode!r}")
        self.resize = None if resize is None else int(resize)
        self.resize_mode = resize_mode
        self.in_channels = in_channels

    # ------------------------------------------------------------------ interface
    def check_images(self, x: torch.Tensor, what: str = "images") -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self.name}: {what} must be a tensor, got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(f"{self.name}: {what} must be [B, C, H, W], got shape {list(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{self.name}: {what} must be a floating tensor, got {x.dtype}")
        if self.in_channels is not None and x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.name}: {what} must have {self.in_channels} channels, got shape "
                f"{list(x.shape)}"
            )

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Check ``x`` and resize it to ``resize x resize`` if asked."""
        self.check_images(x)
        if self.resize is not None and tuple(x.shape[2:]) != (self.resize, self.resize):
            kw = {} if self.resize_mode in ("nearest", "area") else {"align_corners": False}
            x = F.interpolate(x, size=(self.resize, self.resize), mode=self.resize_mode, **kw)
        return x

    def features(self, x: torch.Tensor) -> Features:
        """Per-layer features of ``x [B, C, H, W]`` in [-1, 1] (after the optional resize)."""
        return self._features(self.preprocess(x))

    def _features(self, x: torch.Tensor) -> Features:
        raise NotImplementedError

    def linearize(self, x0: torch.Tensor, mode: str = "auto") -> MetricLinearization:
        """The features and their Jacobian at images ``x0 [n, C, H, W]``
        (:mod:`navcuda.metrics.linearize`).

        ``mode``: ``"shared"`` records the feature network once per image (one primal shared
        by every tangent; raises ``NotImplementedError`` if this metric cannot),
        ``"forward"`` uses forward-mode AD per sample (any metric), ``"auto"`` the first that
        works."""
        if mode not in LINEARIZE_MODES:
            raise ValueError(f"mode must be one of {LINEARIZE_MODES}, got {mode!r}")
        self.check_images(x0, "x0")
        if mode != "forward":
            with torch.no_grad():
                lin = Linearizer(self.preprocess(x0))
            try:
                self._linearize_features(lin)
            except NotImplementedError:
                if mode == "shared":
                    raise
            else:
                return SharedPrimalLinearization(self, x0, lin)
        return ForwardADLinearization(self, x0)

    def _linearize_features(self, lin: Linearizer) -> None:
        """Record :meth:`_features` on ``lin`` (its input: the preprocessed images), tapping
        every feature; raise ``NotImplementedError`` where a layer has no linearisation."""
        raise NotImplementedError(f"{self.name}: no shared-primal linearisation")

    def quadratic(self, diffs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The PSD quadratic form ``q`` with ``d(a, b) = q(features(a) - features(b))``: ``[B]``."""
        raise NotImplementedError

    def distance_from_features(self, fa: Sequence[torch.Tensor], fb: Sequence[torch.Tensor]):
        """``[B]`` distances from features computed by :meth:`features`."""
        if len(fa) != len(fb):
            raise ValueError(f"{self.name}: feature lists differ in length ({len(fa)}, {len(fb)})")
        return self.quadratic([a - b for a, b in zip(fa, fb, strict=True)])

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``[B]`` distances between the image batches ``a`` and ``b`` (same shape)."""
        self.check_images(a, "a")
        self.check_images(b, "b")
        if a.shape != b.shape:
            raise ValueError(
                f"{self.name}: a and b must have the same shape, got {list(a.shape)} and "
                f"{list(b.shape)}"
            )
        return self.distance_from_features(self.features(a), self.features(b))

    def describe(self) -> dict:
        """A JSON-able description to record with results."""
        return {
            "name": self.name,
            "class": type(self).__name__,
            "resize": self.resize,
            "resize_mode": self.resize_mode,
            "quadratic": self.is_quadratic,
        }

    def _freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # noqa: D102 - metrics always run in eval mode
        return super().train(False)


# ============================================================================ LPIPS
def _default_backbone_path(net: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]


def _how_to_get(net: str) -> str:
    ctor = _TV_CONSTRUCTORS[net]
    return (
        f"the torchvision ImageNet checkpoint {BACKBONE_FILES[net]!r}. On a machine with network "
        f'access run `python -c "import torchvision; torchvision.models.{ctor}('
        f"weights='IMAGENET1K_V1')\"`: torchvision caches it as "
        f"~/.cache/torch/hub/checkpoints/{BACKBONE_FILES[net]}; copy that file here and pass its "
        f"path (backbone_path=...), or place it in {_default_backbone_path(net).parent}. Offline "
        f"alternative: make_metric('random-vgg') (see navcuda.metrics.perceptual)."
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class LPIPSMetric(PerceptualMetric):
    """LPIPS v0.1 (``lpips`` package): calibrated linear heads from the wheel, ImageNet backbone
    from a torchvision checkpoint file (never downloaded).

    Args:
        net: ``"vgg"`` (the paper's choice) or ``"alex"``.
        backbone_path: the torchvision checkpoint (``vgg16-397923af.pth`` /
            ``alexnet-owt-7be5be79.pth``); ``None`` looks in torch hub's checkpoint cache
            (``$TORCH_HOME/hub/checkpoints``). A missing or mismatched file raises
            ``FileNotFoundError`` / ``ValueError`` saying which file is expected and how to get it.
        resize, resize_mode: see :class:`PerceptualMetric`.

    The distance equals ``lpips.LPIPS(net=net)(a, b)`` with the same weights (inputs in [-1, 1]).
    """

    def __init__(
        self,
        net: str = "vgg",
        backbone_path: str | os.PathLike | None = None,
        resize: int | None = None,
        resize_mode: str = "bilinear",
    ) -> None:
        super().__init__(resize=resize, resize_mode=resize_mode, in_channels=3)
        if net not in BACKBONE_FILES:
            raise ValueError(
                f"LPIPSMetric: net must be one of {sorted(BACKBONE_FILES)}, got {net!r}"
            )
        self.net_name = net
        self.name = f"lpips-{net}"
        path = Path(backbone_path) if backbone_path is not None else _default_backbone_path(net)
        if not path.is_file():
            raise FileNotFoundError(
                f"LPIPS({net}) backbone not found at {str(path)!r}: expected {_how_to_get(net)}"
            )
        import lpips  # noqa: PLC0415 - optional heavy import

        # fork_rng: the random init of the (then overwritten) backbone must not consume the
        # caller's global RNG stream.
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            # torchvision's deprecation warnings about `pretrained=` inside the lpips package.
            warnings.simplefilter("ignore")
            model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        state = torch.load(path, map_location="cpu", weights_only=True)
        self._load_backbone(model.net, state, path)
        self.lpips = model
        self.backbone_path = str(path)
        self.backbone_sha256 = _sha256(path)
        self._freeze()

    def _load_backbone(self, pnet: nn.Module, state, path: Path) -> None:
        """Copy torchvision's ``features.{i}.*`` tensors into lpips' ``slice{k}.{i}.*``."""
        if not isinstance(state, dict):
            raise ValueError(
                f"{str(path)!r} is not a state dict ({type(state).__name__}); expected "
                f"{_how_to_get(self.net_name)}"
            )
        if any(k.startswith("module.") for k in state):  # saved from DataParallel
            state = {k.removeprefix("module."): v for k, v in state.items()}
        mapped: dict[str, torch.Tensor] = {}
        problems: list[str] = []
        own = pnet.state_dict()
        for key, target in own.items():
            # key: "slice{k}.{i}.weight" -> torchvision "features.{i}.weight"
            _, idx, param = key.split(".")
            src = f"features.{idx}.{param}"
            if src not in state:
                problems.append(f"missing {src}")
            elif tuple(state[src].shape) != tuple(target.shape):
                problems.append(
                    f"{src} has shape {list(state[src].shape)}, expected {list(target.shape)}"
                )
            else:
                mapped[key] = state[src]
        if problems:
            shown = "; ".join(problems[:4]) + (" ..." if len(problems) > 4 else "")
            raise ValueError(
                f"{str(path)!r} does not match the LPIPS({self.net_name}) backbone ({shown}); "
                f"expected {_how_to_get(self.net_name)}"
            )
        pnet.load_state_dict(mapped, strict=True)

    def _features(self, x: torch.Tensor) -> Features:
        import lpips  # noqa: PLC0415

        outs = self.lpips.net(self.lpips.scaling_layer(x))
        return [lpips.normalize_tensor(o) for o in outs]

    def _linearize_features(self, lin: Linearizer) -> None:
        scaling, net = self.lpips.scaling_layer, self.lpips.net
        lin.affine(scaling, lambda t: t / scaling.scale)
        for k in range(1, net.N_slices + 1):
            lin.module(getattr(net, f"slice{k}"))
            lin.tap(norm_plus_eps_normalize(1e-10))  # lpips.normalize_tensor's default eps

    def quadratic(self, diffs):
        total = 0
        for lin, d in zip(self.lpips.lins, diffs, strict=True):
            total = total + lin(d.square()).mean(dim=(1, 2, 3))
        return total

    def describe(self) -> dict:
        return {
            **super().describe(),
            "net": self.net_name,
            "version": "0.1",
            "backbone_file": os.path.basename(self.backbone_path),
            "backbone_sha256": self.backbone_sha256,
        }


# ============================================================================ fallbacks
class FeatureLPIPS(PerceptualMetric):
    """LPIPS-style distance on any multi-layer feature extractor.

    ``d(a, b) = sum_l weight_l * mean_{h,w} sum_c (n(phi_l(a)) - n(phi_l(b)))^2`` where
    ``n`` normalises every spatial position's channel vector to unit length (smoothly, with
    ``eps``) when ``normalize`` is True, and ``[B, C]`` features count as ``1 x 1`` maps.

    Args:
        feature_fn: ``x [B, C, H, W] -> list of [B, C_l, H_l, W_l] or [B, C_l]`` (differentiable in
            ``x``). If it is an ``nn.Module`` or a method of one, that module is registered as
            a submodule (moves with ``.to()``) and frozen.
        weights: per-layer weights (default 1 for every layer).
        name: recorded by :meth:`describe`; name the features you plug in.
        in_channels: expected image channels (None: any).
        linearize_fn: ``linearize_fn(lin)`` records ``feature_fn`` on a
            :class:`~navcuda.metrics.linearize.Linearizer` (its input: the preprocessed images),
            tapping every feature in order; it makes :meth:`linearize` share one primal per
            image (faster, leaner Gauss-Newton products). Without it, forward-mode AD.
    """

    def __init__(
        self,
        feature_fn: Callable[[torch.Tensor], Sequence[torch.Tensor]],
        weights: Sequence[float] | None = None,
        normalize: bool = True,
        eps: float = 1e-6,
        name: str = "feature-lpips",
        resize: int | None = None,
        resize_mode: str = "bilinear",
        in_channels: int | None = 3,
        linearize_fn: Callable[[Linearizer], None] | None = None,
    ) -> None:
        super().__init__(resize=resize, resize_mode=resize_mode, in_channels=in_channels)
        if not callable(feature_fn):
            raise TypeError("FeatureLPIPS: feature_fn must be callable")
        if linearize_fn is not None and not callable(linearize_fn):
            raise TypeError("FeatureLPIPS: linearize_fn must be callable or None")
        self.feature_fn = feature_fn
        owner = getattr(feature_fn, "__self__", None)
        if isinstance(owner, nn.Module) and not isinstance(feature_fn, nn.Module):
            # A bound method (e.g. ``regressor.feature_maps``): register its module, so that it
            # moves with ``.to()`` and is frozen like a feature_fn that is a module.
            self.feature_module = owner
        self.linearize_fn = linearize_fn
        self.layer_weights = None if weights is None else [float(w) for w in weights]
        if self.layer_weights is not None and any(w < 0 for w in self.layer_weights):
            raise ValueError("FeatureLPIPS: layer weights must be >= 0 (a PSD quadratic form)")
        self.normalize = normalize
        self.eps = float(eps)
        self.name = name
        self._freeze()

    def _features(self, x: torch.Tensor) -> Features:
        feats = list(self.feature_fn(x))
        if self.layer_weights is not None and len(feats) != len(self.layer_weights):
            raise ValueError(
                f"{self.name}: feature_fn returned {len(feats)} layers but "
                f"{len(self.layer_weights)} weights were given"
            )
        out = []
        for f in feats:
            if f.ndim not in (2, 4):
                raise ValueError(
                    f"{self.name}: features must be [B, C, H, W] or [B, C], got {list(f.shape)}"
                )
            out.append(_unit_normalize(f, self.eps) if self.normalize else f)
        return out

    def _linearize_features(self, lin: Linearizer) -> None:
        if self.linearize_fn is None:
            raise NotImplementedError(f"{self.name}: no linearize_fn was given")
        self.linearize_fn(lin)
        n_feats = len(lin.features)
        if self.layer_weights is not None and n_feats != len(self.layer_weights):
            raise ValueError(
                f"{self.name}: linearize_fn tapped {n_feats} features but "
                f"{len(self.layer_weights)} weights were given"
            )
        if self.normalize:
            lin.transform_features(smooth_unit_normalize(self.eps))

    def quadratic(self, diffs):
        total = 0
        for i, d in enumerate(diffs):
            w = 1.0 if self.layer_weights is None else self.layer_weights[i]
            total = total + w * _spatial_mean(d.square())
        return total

    def describe(self) -> dict:
        return {
            **super().describe(),
            "normalize": self.normalize,
            "layer_weights": self.layer_weights,
        }


class _RandomVGG(nn.Module):
    """VGG-like stack: blocks of (conv3x3 + ReLU) x convs_per_block, 2x2 max-pool between blocks;
    features after each block's last ReLU. Kaiming-normal weights, zero biases."""

    def __init__(self, channels: Sequence[int], convs_per_block: int, in_channels: int, seed: int):
        super().__init__()
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        self.blocks = nn.ModuleList()
        with torch.random.fork_rng(devices=[]):  # nn.Conv2d's own init must not touch global RNG
            self._build(channels, convs_per_block, in_channels, gen)

    def _build(self, channels, convs_per_block, in_channels, gen) -> None:
        c_in = in_channels
        for i, c in enumerate(channels):
            layers: list[nn.Module] = [nn.MaxPool2d(2)] if i > 0 else []
            for _ in range(convs_per_block):
                conv = nn.Conv2d(c_in, c, 3, padding=1)
                with torch.no_grad():
                    std = (2.0 / (c_in * 9)) ** 0.5
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * std)
                    conv.bias.zero_()
                layers += [conv, nn.ReLU()]
                c_in = c
            self.blocks.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out

    def linearize(self, lin: Linearizer) -> None:
        """Record :meth:`forward` on ``lin`` (:mod:`navcuda.metrics.linearize`)."""
        for block in self.blocks:
            lin.module(block)
            lin.tap()


class RandomFeatureLPIPS(FeatureLPIPS):
    """LPIPS-style distance on a fixed-seed random VGG-like network (offline fallback).

    Deterministic for a ``seed`` across runs and machines (weights drawn on the CPU from an explicit
    ``torch.Generator``, then moved with ``.to()``). Inputs in [-1, 1] are used as they are.
    See the module docstring for its limitations.
    """

    def __init__(
        self,
        seed: int = 0,
        channels: Sequence[int] = (32, 64, 128, 128),
        convs_per_block: int = 2,
        resize: int | None = None,
        resize_mode: str = "bilinear",
        in_channels: int = 3,
    ) -> None:
        net = _RandomVGG(tuple(int(c) for c in channels), int(convs_per_block), in_channels, seed)
        super().__init__(
            net,
            name="random-vgg",
            resize=resize,
            resize_mode=resize_mode,
            in_channels=in_channels,
            linearize_fn=net.linearize,
        )
        self.seed = int(seed)
        self.channels = [int(c) for c in channels]
        self.convs_per_block = int(convs_per_block)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "seed": self.seed,
            "channels": self.channels,
            "convs_per_block": self.convs_per_block,
        }


class PixelMSE(PerceptualMetric):
    """Mean squared pixel difference ``mean_{c,h,w} (a - b)^2`` (tests, sanity baseline)."""

    name = "pixel"

    def __init__(
        self,
        resize: int | None = None,
        resize_mode: str = "bilinear",
        in_channels: int | None = None,
    ) -> None:
        super().__init__(resize=resize, resize_mode=resize_mode, in_channels=in_channels)

    def _features(self, x: torch.Tensor) -> Features:
        return [x]

    def _linearize_features(self, lin: Linearizer) -> None:
        lin.tap()

    def quadratic(self, diffs):
        (d,) = diffs
        return d.square().flatten(1).mean(dim=1)


# ============================================================================ factory
def toy_regressor_metric(regressor=None, **kw) -> FeatureLPIPS:
    """``"toy-regressor"``: :class:`FeatureLPIPS` on the bundled toy-world factor regressor's
    feature maps (every conv block and the penultimate layer). The offline perceptual metric of
    the toy world: it measures change along that world's factors of variation (and little else),
    so it is meaningful for the bundled model only."""
    from navcuda.metrics.factor_regressor import load_factor_regressor

    reg = load_factor_regressor() if regressor is None else regressor
    return FeatureLPIPS(
        reg.feature_maps, name="toy-regressor", linearize_fn=reg.linearize_feature_maps, **kw
    )


def make_metric(name: str, **kw) -> PerceptualMetric:
    """Build a metric by name: ``"lpips-vgg"``, ``"lpips-alex"`` (``backbone_path=...``),
    ``"random-vgg"`` (``seed=...``), ``"toy-regressor"`` (``regressor=...``), ``"pixel"``;
    ``resize``/``resize_mode`` for all."""
    if name in ("lpips-vgg", "lpips-alex"):
        return LPIPSMetric(net=name.removeprefix("lpips-"), **kw)
    if name == "random-vgg":
        return RandomFeatureLPIPS(**kw)
    if name == "toy-regressor":
        return toy_regressor_metric(**kw)
    if name == "pixel":
        return PixelMSE(**kw)
    raise ValueError(f"unknown metric {name!r}; choose one of {list(METRIC_NAMES)}")


def resolve_metric_name(
    name: str = "auto", toy_world: bool = False, backbone_path: str | os.PathLike | None = None
) -> str:
    """The metric ``"auto"`` stands for, in this order: ``"lpips-vgg"`` when its backbone file is
    given or found in torch hub's checkpoint cache (the paper's metric); else ``"toy-regressor"``
    for a toy-world model (``toy_world``); else ``"random-vgg"``. Other names pass through. The
    fallbacks warn once, so no result silently uses a weaker metric."""
    if name != "auto":
        if name not in METRIC_NAMES:
            raise ValueError(f"unknown metric {name!r}; choose 'auto' or one of {METRIC_NAMES}")
        return name
    path = Path(backbone_path) if backbone_path is not None else _default_backbone_path("vgg")
    if path.is_file():
        return "lpips-vgg"
    fallback = "toy-regressor" if toy_world else "random-vgg"
    warnings.warn(
        f"LPIPS backbone {BACKBONE_FILES['vgg']!r} not found (looked at {path}); using the offline "
        f"fallback metric {fallback!r} (recorded in the result). For the paper's metric supply "
        f"{_how_to_get('vgg')}",
        stacklevel=2,
    )
    return fallback

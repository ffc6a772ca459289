"""Load and save generators: navcuda ``.safetensors``, rosinality ``.pt``, NVlabs ``.pkl``.

- **navcuda** (:func:`save_generator`): one ``.safetensors`` file with the float32 state dict
  and, in the safetensors string metadata under the key ``"navcuda"``, the JSON
  ``{"format": "navcuda-generator", "version": 1, "config": GeneratorConfig.to_dict(),
  "user": metadata}``; a StyleGAN3 file adds ``"architecture": "stylegan3"`` and its config is a
  ``StyleGAN3Config.to_dict()`` (no key: StyleGAN2), and ``"checksum"`` the SHA-256 of the
  tensors (:mod:`navcuda.io.checksum`), verified on load (files written before it load with a
  note). Written atomically (temporary file in the same folder, then ``os.replace``).
- **rosinality** ``.pt`` (stylegan2-pytorch): ``torch.load(weights_only=True)`` of a dict with
  ``g_ema`` and optionally ``latent_avg``. Training checkpoints also hold ``args``, an
  ``argparse.Namespace``; it is allowed (and only it) through
  ``torch.serialization.safe_globals([argparse.Namespace])``: a Namespace is rebuilt by setting
  attributes on an empty instance, so it runs no code. The architecture is inferred from the
  tensor shapes.
- **NVlabs** network pickles (stylegan2-ada-pytorch, stylegan3 repo with ``--cfg=stylegan2``): read
  by the restricted unpickler of :mod:`navcuda.models.nvlabs_pickle` (never executes the pickled
  source code) and converted to the rosinality layout; StyleGAN3 ``G_ema``
  (``training.networks_stylegan3``) loads into :class:`navcuda.models.stylegan3.Generator` under
  NVlabs' own names, its config from the recorded kwargs (:mod:`navcuda.models.nvlabs_stylegan3`).

Every problem raises :class:`CheckpointError` (a ``ValueError``) that names the file and the first
offending key, with expected and found shapes. A model is built only after the shapes its config
implies match the stored tensors (compared on the ``meta`` device), so a config claiming a huge
network in a small file is refused without allocating it. Tensors holding NaN or Inf are refused
(a generator with them renders black images), and zip-format ``.pt`` files have their CRC-32
checksums checked before they are read, so bytes flipped inside a stored tensor are caught rather
than loaded; truncated files are called damaged, whatever their format.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, Literal

import torch

from navcuda.io.atomic import atomic_save_safetensors
from navcuda.io.checksum import CHECKSUM_KEY, tensor_checksum, verify_checksum
from navcuda.models.nvlabs_pickle import (
    CheckpointError,
    is_stylegan3_state,
    nvlabs_config,
    nvlabs_to_rosinality,
    read_nvlabs_pickle,
)
from navcuda.models.nvlabs_stylegan3 import stylegan3_config
from navcuda.models.stylegan2 import Generator, GeneratorConfig
from navcuda.models.stylegan3 import StyleGAN3Config, StyleGAN3Generator

AnyGenerator = Generator | StyleGAN3Generator

__all__ = [
    "CheckpointError",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "detect_format",
    "load_generator",
    "read_metadata",
    "save_generator",
]

FORMAT_NAME = "navcuda-generator"
FORMAT_VERSION = 1
_META_KEY = "navcuda"

CheckpointFormat = Literal["navcuda", "rosinality", "nvlabs-pickle"]

# torch.save's legacy (non-zip) format starts with a protocol-2 pickle of this magic number.
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"

_RECOPY = "re-download or re-copy the file"
# safetensors refuses headers larger than this (100 MB).
_MAX_SAFETENSORS_HEADER = 100_000_000

_HOW_TO = (
    "pass a navcuda .safetensors file, a rosinality stylegan2-pytorch .pt checkpoint (with "
    "'g_ema') or an NVlabs stylegan2-ada-pytorch network pickle (.pkl)"
)


# --------------------------------------------------------------------------- detection


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; {_HOW_TO}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is not a file; {_HOW_TO}")


def detect_format(path: str | os.PathLike) -> CheckpointFormat:
    """The format of a checkpoint file, from its first bytes (not its name).

    ``"navcuda"`` (safetensors), ``"rosinality"`` (a ``torch.save`` file, zip or legacy) or
    ``"nvlabs-pickle"`` (a plain pickle). Raises :class:`CheckpointError` otherwise.
    """
    path = Path(path)
    _check_file(path)
    with path.open("rb") as f:
        head = f.read(64)
        size = path.stat().st_size
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 0 < n <= size - 8 and head[8:9] == b"{":
            return "navcuda"
        if size - 8 < n <= _MAX_SAFETENSORS_HEADER and head[8:9] == b"{":
            raise CheckpointError(
                f"{str(path)!r} is a damaged (truncated) safetensors file: its header needs "
                f"{8 + n} bytes, the file has {size}; {_RECOPY}"
            )
    if head.startswith(b"PK\x03\x04"):
        if zipfile.is_zipfile(path):
            return "rosinality"
        raise CheckpointError(
            f"{str(path)!r} is a damaged (truncated?) torch zip file: it starts like one but has "
            f"no zip directory at its end ({size} bytes); {_RECOPY}"
        )
    if head.startswith(_TORCH_LEGACY_MAGIC):
        return "rosinality"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "nvlabs-pickle"
    raise CheckpointError(
        f"{str(path)!r} is not a recognised checkpoint (first bytes {head[:16]!r}); {_HOW_TO}"
    )


# --------------------------------------------------------------------------- validation


def _validate_state(
    generator: AnyGenerator,
    state: dict[str, torch.Tensor],
    path: Path,
    optional: frozenset[str] = frozenset(),
) -> None:
    """Raise CheckpointError for the first missing/unexpected key or shape mismatch."""
    expected = generator.state_dict()
    missing = [k for k in expected if k not in state and not _is_optional(k, optional)]
    if missing:
        raise CheckpointError(
            f"{str(path)!r}: missing tensor '{missing[0]}' (expected shape "
            f"{list(expected[missing[0]].shape)}; {len(missing)} missing in all) for the inferred "
            f"architecture {_describe(generator.config)}"
        )
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise CheckpointError(
            f"{str(path)!r}: unexpected tensor '{unexpected[0]}' ({len(unexpected)} unexpected in "
            f"all) for the architecture {_describe(generator.config)}"
        )
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{str(path)!r}: '{k}' is a {type(v).__name__}, not a tensor")
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CheckpointError(
                f"{str(path)!r}: shape mismatch for '{k}': expected {list(expected[k].shape)}, "
                f"found {list(v.shape)} (architecture {_describe(generator.config)})"
            )
        if not v.is_floating_point():
            raise CheckpointError(f"{str(path)!r}: '{k}' has dtype {v.dtype}, expected floats")
        if not bool(torch.isfinite(v).all()):
            raise CheckpointError(
                f"{str(path)!r}: tensor '{k}' contains NaN/Inf values: the file is corrupt (or was "
                "saved from a diverged training run); use an intact copy or an earlier checkpoint"
            )


def _is_optional(key: str, optional: frozenset[str]) -> bool:
    """``optional`` holds names, ``"*.kernel"`` (resampling filters), ``"noises.*"``."""
    return (
        key in optional
        or ("*.kernel" in optional and key.endswith(".kernel"))
        or ("noises.*" in optional and key.startswith("noises."))
    )


def _describe(cfg: GeneratorConfig | StyleGAN3Config) -> str:
    if isinstance(cfg, StyleGAN3Config):
        return cfg.describe()
    ch = {r: cfg.channels(r) for r in cfg.resolutions}
    return (
        f"(resolution {cfg.resolution}, z_dim {cfg.z_dim}, w_dim {cfg.w_dim}, n_mlp {cfg.n_mlp}, "
        f"channels {ch})"
    )


def _build(
    config: GeneratorConfig,
    state: dict[str, torch.Tensor],
    path: Path,
    device: str | torch.device,
    optional: frozenset[str] = frozenset(),
) -> Generator:
    with torch.device("meta"):  # shapes only: nothing is allocated before they match the file
        shapes = Generator(config)
    _validate_state(shapes, state, path, optional)
    g = Generator(config)
    expected = g.state_dict()
    for k in state:
        if k.endswith(".kernel") and not torch.allclose(
            state[k].float(), expected[k], rtol=1e-5, atol=1e-7
        ):
            raise CheckpointError(
                f"{str(path)!r}: resampling filter '{k}' differs from the filter of blur_taps "
                f"{list(config.blur_taps)} navcuda uses"
            )
    with torch.no_grad():
        g.load_state_dict({k: v.float() for k, v in state.items()}, strict=not optional)
    return g.to(device).eval()


def _build_stylegan3(
    config: StyleGAN3Config, state: dict[str, torch.Tensor], path: Path, device
) -> StyleGAN3Generator:
    """A StyleGAN3 of ``config`` holding ``state`` (NVlabs' names; every tensor required)."""
    with torch.device("meta"):  # shapes only: the weights come from the file
        g = StyleGAN3Generator(config)
    _validate_state(g, state, path)
    g.load_state_dict(
        {k: v.detach().to(torch.float32) for k, v in state.items()}, strict=True, assign=True
    )
    return g.to(device).eval()


# --------------------------------------------------------------------------- navcuda format


def save_generator(
    generator: AnyGenerator, path: str | os.PathLike, metadata: dict[str, Any] | None = None
) -> Path:
    """Save ``generator`` as one navcuda ``.safetensors`` file (atomically); returns the path.

    ``metadata`` is any JSON-serialisable dict, returned by :func:`read_metadata`. The header
    records the tensors' checksum. Raises ``OSError`` naming ``path`` when it cannot be written.
    """
    path = Path(path)
    if not isinstance(generator, (Generator, StyleGAN3Generator)):
        raise TypeError(
            f"expected a navcuda Generator (StyleGAN2 or StyleGAN3), got {type(generator).__name__}"
        )
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "config": generator.config.to_dict(),
        "user": metadata if metadata is not None else {},
    }
    if isinstance(generator, StyleGAN3Generator):
        header["architecture"] = "stylegan3"
    try:
        json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"metadata must be JSON-serialisable: {e}") from e
    tensors = {
        k: v.detach().to(device="cpu", dtype=torch.float32).contiguous().clone()
        for k, v in generator.state_dict().items()
    }
    header[CHECKSUM_KEY] = tensor_checksum(tensors)
    atomic_save_safetensors(tensors, path, metadata={_META_KEY: json.dumps(header)})
    return path


def _read_header(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types
        short = _safetensors_shortfall(path)
        if short is not None:
            raise CheckpointError(
                f"{str(path)!r} is a damaged (truncated) safetensors file: {short}; {_RECOPY}"
            ) from e
        raise CheckpointError(f"{str(path)!r}: not a readable safetensors file: {e}") from e
    if _META_KEY not in meta:
        raise CheckpointError(
            f"{str(path)!r} is a safetensors file without navcuda metadata (metadata keys "
            f"{sorted(meta)}); write it with navcuda.save_generator"
        )
    try:
        header = json.loads(meta[_META_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{str(path)!r}: corrupt navcuda metadata: {e}") from e
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        fmt = header.get("format") if isinstance(header, dict) else None
        raise CheckpointError(f"{str(path)!r}: format {fmt!r}, expected {FORMAT_NAME!r}")
    version = header.get("version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise CheckpointError(
            f"{str(path)!r}: navcuda generator format version {version!r}, this navcuda reads "
            f"version {FORMAT_VERSION}" + ("; upgrade navcuda" if newer else "")
        )
    return header


def _safetensors_shortfall(path: Path) -> str | None:
    """How a safetensors file falls short of the size its header implies, or None."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                return f"its header needs {8 + n} bytes, the file has {size}"
            header = json.loads(f.read(n))
        end = max(
            (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
            default=0,
        )
    except (OSError, struct.error, ValueError, TypeError, KeyError, IndexError):
        return None
    need = 8 + n + end
    return f"its tensors need {need} bytes, the file has {size}" if need > size else None


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The user metadata stored by :func:`save_generator` in a navcuda file."""
    path = Path(path)
    _check_file(path)
    return _read_header(path).get("user") or {}


def _load_navcuda(path: Path, device: str | torch.device) -> AnyGenerator:
    from safetensors.torch import load_file

    header = _read_header(path)
    arch = header.get("architecture", "stylegan2")
    if arch not in ("stylegan2", "stylegan3"):
        raise CheckpointError(
            f"{str(path)!r}: architecture {arch!r}, this navcuda reads 'stylegan2' and 'stylegan3'"
        )
    config_cls = StyleGAN3Config if arch == "stylegan3" else GeneratorConfig
    try:
        config = config_cls.from_dict(header["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{str(path)!r}: invalid generator config: {e}") from e
    try:
        state = load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{str(path)!r}: its tensors cannot be read: {e}; {_RECOPY}") from e
    verify_checksum(
        header.get(CHECKSUM_KEY),
        state,
        path,
        CheckpointError,
        "generator",
        f"{_RECOPY}, or save the generator again from its source",
    )
    if isinstance(config, StyleGAN3Config):
        return _build_stylegan3(config, state, path, device)
    return _build(config, state, path, device)


# --------------------------------------------------------------------------- rosinality


def zip_crc_problem(path: str | os.PathLike) -> str | None:
    """Why the zip file ``path`` is damaged (first bad member named), or None if it is intact.

    Reads every member through :mod:`zipfile`, which checks its CRC-32 (``torch.save`` files are
    uncompressed zips, so this costs one sequential read). Members recorded with a CRC of 0 are
    skipped: ``torch.save`` writes 0 when ``compute_crc32`` is disabled, so they cannot be checked.
    """
    member = None
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.CRC == 0 and info.file_size > 0:
                    continue
                member = info.filename
                with zf.open(info) as f:
                    while f.read(1 << 22):
                        pass
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        where = f"zip member {member!r}" if member is not None else "zip directory"
        return f"{where}: {e}"
    return None


def load_torch_file(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` of ``path`` read by content: through a file object,
    since ``torch.load`` of a path ending in ``.safetensors`` reads it as safetensors."""
    with Path(path).open("rb") as f:
        return torch.load(f, map_location=map_location, weights_only=True)


def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return load_torch_file(path)
    except Exception as e:  # UnpicklingError, RuntimeError, ...
        if _is_truncation(e):
            raise CheckpointError(
                f"{str(path)!r} is a damaged (truncated) torch file: "
                f"{type(e).__name__}: {(str(e).splitlines() or [''])[0].rstrip('.')}; {_RECOPY}"
            ) from e
        raise CheckpointError(
            f"{str(path)!r} could not be read as a torch checkpoint with weights_only=True "
            "(navcuda never unpickles arbitrary objects): "
            f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
        ) from e


def _is_truncation(e: BaseException) -> bool:
    """Whether a reader's error says the data ended early."""
    text = str(e).lower()
    return isinstance(e, EOFError) or any(
        w in text for w in ("unexpected eof", "ran out of input", "truncated")
    )


def _infer_channels(channels: dict[int, int], resolution: int) -> dict[str, Any]:
    """channel_base/channel_max reproducing ``channels`` if any (rosinality form first)."""
    cmax = max(channels.values())
    candidates = [16384 * m for m in (2, 1, 4, 8)] + [32768 // 2**i for i in range(2, 8)]
    candidates += [c * r for r, c in channels.items()]
    for base in candidates:
        if all(min(base // r, cmax) == c for r, c in channels.items()):
            return {"channel_base": base, "channel_max": cmax}
    return {"channel_map": dict(channels)}


def infer_config(state: dict[str, torch.Tensor], **overrides: Any) -> GeneratorConfig:
    """The :class:`GeneratorConfig` of a rosinality-layout state dict, from its shapes."""

    def need(key: str, ndim: int, form: str) -> torch.Tensor:
        if key not in state:
            raise CheckpointError(f"missing tensor '{key}' needed to infer the architecture")
        t = state[key]
        if not isinstance(t, torch.Tensor) or t.ndim != ndim:
            found = f"shape {list(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise CheckpointError(
                f"tensor '{key}' should have {ndim} dimensions {form}, found {found}: the "
                "checkpoint is damaged or not a StyleGAN2 generator"
            )
        return t

    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in state:
        n_mlp += 1
    s1 = need("style.1.weight", 2, "[w_dim, z_dim]")
    n_rgbs = len({m.group(1) for k in state if (m := re.match(r"^to_rgbs\.(\d+)\.", k))})
    resolution = 4 * 2**n_rgbs
    channels = {4: int(need("input.input", 4, "[1, channels, 4, 4]").shape[1])}
    conv = "[1, out, in, k, k]"
    for j in range(n_rgbs):
        channels[8 * 2**j] = int(need(f"convs.{2 * j}.conv.weight", 5, conv).shape[1])
    embed = state.get("embed.weight")  # conditional: label embedding [embed_dim, c_dim]
    embed_dim = 0 if embed is None or embed.ndim != 2 else int(embed.shape[0])
    kw: dict[str, Any] = dict(
        resolution=resolution,
        z_dim=int(s1.shape[1]) - embed_dim,
        w_dim=int(s1.shape[0]),
        n_mlp=n_mlp,
        img_channels=int(need("to_rgb1.conv.weight", 5, conv).shape[1]),
    )
    if embed_dim:
        kw.update(c_dim=int(embed.shape[1]), embed_dim=embed_dim)
    kw.update(_infer_channels(channels, resolution))
    kw.update(overrides)
    try:
        return GeneratorConfig(**kw)
    except ValueError as e:
        raise CheckpointError(f"cannot build a generator from the checkpoint's shapes: {e}") from e


def _load_rosinality(path: Path, device: str | torch.device) -> Generator:
    if zipfile.is_zipfile(path):
        problem = zip_crc_problem(path)
        if problem is not None:
            raise CheckpointError(
                f"{str(path)!r} is a damaged torch zip file ({problem}): loading it could give "
                "weights changed without any error; re-download or re-copy the file"
            )
    ckpt = _torch_load(path)
    if not isinstance(ckpt, dict) or "g_ema" not in ckpt:
        found = sorted(map(str, ckpt))[:20] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{str(path)!r} is not a generator checkpoint: no 'g_ema' entry (found: {found}); "
            f"{_HOW_TO}"
        )
    state = ckpt["g_ema"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{str(path)!r}: 'g_ema' is a {type(state).__name__}, not a dict")
    state = dict(state)
    try:
        config = infer_config(state)
    except CheckpointError as e:
        raise CheckpointError(f"{str(path)!r}: {e}") from e
    latent_avg = ckpt.get("latent_avg")
    if latent_avg is not None and "w_avg" not in state:
        if not isinstance(latent_avg, torch.Tensor):
            raise CheckpointError(f"{str(path)!r}: 'latent_avg' is not a tensor")
        state["w_avg"] = (
            latent_avg.reshape(-1) if latent_avg.numel() == config.w_dim else latent_avg
        )
    optional = {"w_avg"}
    if not any(k.startswith("noises.") for k in state):
        # rosinality's code before its `noises` buffers (2019) saved no constant noise.
        warnings.warn(
            f"{str(path)!r} stores no constant noise (noises.*): noise_mode='const' will use "
            "freshly drawn noise maps, not the original ones",
            stacklevel=3,
        )
        optional.add("noises.*")
    g = _build(config, state, path, device, optional=frozenset(optional))
    if "w_avg" not in state:
        warnings.warn(
            f"{str(path)!r} has no 'latent_avg': computing w_avg from 4096 seeded samples of the "
            "mapping network (truncation will differ slightly from the original)",
            stacklevel=3,
        )
        g.update_w_avg()
    return g


# --------------------------------------------------------------------------- NVlabs


def _load_nvlabs(path: Path, device: str | torch.device) -> AnyGenerator:
    sg3_config = None
    try:
        with path.open("rb") as f:
            nv_state, kwargs = read_nvlabs_pickle(f, allow_stylegan3=True)
        if is_stylegan3_state(nv_state):
            sg3_config = stylegan3_config(kwargs)
        else:
            config = nvlabs_config(nv_state, kwargs)
            taps = config.blur_taps if config is not None else (1, 3, 3, 1)
            state = nvlabs_to_rosinality(nv_state, taps)
            if config is None:
                warnings.warn(
                    f"{str(path)!r} records no constructor kwargs: architecture inferred from "
                    "shapes, assuming lr_mlp=0.01 and no conv_clamp",
                    stacklevel=3,
                )
                config = infer_config(state)
    except CheckpointError as e:
        raise CheckpointError(f"{str(path)!r}: {e}") from e
    if sg3_config is not None:  # NVlabs' names and buffers (its filters too) load as they are
        return _build_stylegan3(sg3_config, nv_state, path, device)
    # NVlabs' resample filters are not copied: the Generator builds its own (checked equal).
    g = _build(config, state, path, device, optional=frozenset({"w_avg", "*.kernel"}))
    if "w_avg" not in state:
        warnings.warn(f"{str(path)!r} has no mapping.w_avg: computing it", stacklevel=3)
        g.update_w_avg()
    return g


# --------------------------------------------------------------------------- public


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> AnyGenerator:
    """Load a generator from any supported checkpoint (format detected from the file's content).

    Returns an ``eval()`` :class:`Generator` (StyleGAN2) or, for StyleGAN3 networks,
    :class:`navcuda.models.stylegan3.Generator`, on ``device``. Raises :class:`CheckpointError`.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "navcuda":
        return _load_navcuda(path, device)
    if fmt == "rosinality":
        return _load_rosinality(path, device)
    return _load_nvlabs(path, device)

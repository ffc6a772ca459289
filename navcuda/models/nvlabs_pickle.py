"""Read NVlabs stylegan2-ada-pytorch / stylegan3 network pickles without running their code.

A network pickle (``network-snapshot-*.pkl``) is ``pickle.dump`` of a dict ``{'G': ..., 'D': ...,
'G_ema': ..., 'augment_pipe': ..., 'training_set_kwargs': ...}`` whose networks are
``torch_utils.persistence`` objects: each pickles as ``_reconstruct_persistent_obj(meta)`` with
``meta = dict(type='class', version, module_src, class_name, state)``, where ``module_src`` is the
*source code* of the module defining the class (NVlabs' loader ``exec``-s it) and ``state`` the
object's ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``, ``_init_kwargs``, ...).

:class:`RestrictedUnpickler` resolves only an explicit allowlist of globals, each mapped to a safe
function of this module: persistent objects become inert :class:`PersistentNode` stand-ins
(``module_src`` is never executed), ``EasyDict`` becomes a plain ``dict`` subclass, tensors are
rebuilt from storages read by ``torch.load(..., weights_only=True)``, and numpy arrays are rebuilt
by numpy's own (data-only) reconstructors. Any other global (``os.system``, ``builtins.eval``,
``subprocess.Popen``, an arbitrary class) and any persistent id raise :class:`CheckpointError`.

:func:`read_nvlabs_pickle` returns the generator ``G_ema`` as a flat NVlabs state dict
(``mapping.fc0.weight``, ``synthesis.b4.const``, ...) plus its constructor kwargs;
:func:`nvlabs_to_rosinality` converts a StyleGAN2 one to the rosinality layout of
:class:`navcuda.models.stylegan2.Generator` and :func:`nvlabs_config` derives the
:class:`GeneratorConfig`. StyleGAN3 generators (:func:`is_stylegan3_state`) keep NVlabs' names in
:class:`navcuda.models.stylegan3.Generator`; :mod:`navcuda.models.nvlabs_stylegan3` reads their
config.

Math: NVlabs' ``SynthesisLayer`` does not scale the raw weight by ``1/sqrt(fan_in)`` before the
demodulation (navcuda/rosinality do); demodulation removes any per-output scale, so outputs agree
up to the ``1e-8`` in the demodulation norm. ``ToRGBLayer`` scales its styles by
``1/sqrt(fan_in)`` exactly as navcuda scales the weight (no demodulation), so it matches too.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import math
import pickle
import re
import warnings
from typing import Any, BinaryIO

import numpy as np
import torch

__all__ = [
    "CheckpointError",
    "PersistentNode",
    "RestrictedUnpickler",
    "restricted_load",
    "read_nvlabs_pickle",
    "is_stylegan3_state",
    "nvlabs_to_rosinality",
    "nvlabs_config",
]


class CheckpointError(ValueError):
    """A checkpoint file is missing, malformed, unsafe or of an unsupported kind."""


# --------------------------------------------------------------------------- stand-ins


class PersistentNode:
    """Inert stand-in for one ``torch_utils.persistence`` object (its code is never run).

    ``class_name`` is the original class name (``"Generator"``, ``"SynthesisLayer"``...), ``state``
    the pickled ``__dict__`` of the object.
    """

    __slots__ = ("class_name", "state", "version")

    def __init__(self, class_name: str, state: dict, version: Any = None) -> None:
        self.class_name = class_name
        self.state = state
        self.version = version

    @property
    def init_kwargs(self) -> dict:
        kw = self.state.get("_init_kwargs")
        return dict(kw) if isinstance(kw, dict) else {}

    @property
    def children(self) -> dict[str, Any]:
        mods = self.state.get("_modules")
        return dict(mods) if isinstance(mods, dict) else {}

    def __repr__(self) -> str:
        return f"PersistentNode({self.class_name!r}, children={list(self.children)})"


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a plain dict (pickled via NEWOBJ + SETITEMS)."""

    def __setstate__(self, state: Any) -> None:  # pickle BUILD; EasyDict keeps no attributes
        if isinstance(state, dict):
            self.update(state)


def _reconstruct_persistent_obj(meta: Any) -> PersistentNode:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise CheckpointError(
            "malformed persistent object in the pickle: expected a dict with type='class', "
            f"got {type(meta).__name__}"
        )
    class_name = meta.get("class_name")
    state = meta.get("state")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise CheckpointError("malformed persistent object: class_name or state missing")
    # meta["module_src"] is source code: deliberately ignored, never executed.
    return PersistentNode(class_name, dict(state), meta.get("version"))


def _load_from_bytes(b: Any) -> Any:
    if not isinstance(b, (bytes, bytearray)):
        raise CheckpointError(f"malformed tensor storage: expected bytes, got {type(b).__name__}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TypedStorage deprecation notice
            storage = torch.load(io.BytesIO(bytes(b)), map_location="cpu", weights_only=True)
    except Exception as e:  # any failure of the nested load is a bad file
        raise CheckpointError(f"could not read a tensor storage in the pickle: {e}") from e
    if not isinstance(storage, torch.storage.TypedStorage):
        raise CheckpointError(
            f"malformed tensor storage: the nested blob holds a {type(storage).__name__}"
        )
    return storage


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> torch.Tensor:
    if not isinstance(storage, torch.storage.TypedStorage):
        raise CheckpointError(
            f"malformed tensor in the pickle: storage is a {type(storage).__name__}"
        )
    return torch._utils._rebuild_tensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None):
    if not isinstance(data, torch.Tensor):
        raise CheckpointError(f"malformed parameter in the pickle: {type(data).__name__}")
    return data


def _rebuild_parameter_with_state(
    data: Any, requires_grad: Any = False, backward_hooks: Any = None, state: Any = None
):
    return _rebuild_parameter(data)


def _np_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise CheckpointError(f"refusing numpy array subclass {subtype!r} in the pickle")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise CheckpointError("refusing a numpy object scalar in the pickle")
    return np.frombuffer(bytes(data), dtype=dtype, count=1)[0]


def _codecs_encode(obj: Any, encoding: str = "utf-8") -> bytes:
    if not isinstance(obj, str) or encoding != "latin1":
        raise CheckpointError("refusing _codecs.encode with unexpected arguments in the pickle")
    return obj.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("_codecs", "encode"): _codecs_encode,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("torch", "Size"): torch.Size,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of an NVlabs network pickle (see module doc)."""

    def find_class(self, module: str, name: str) -> Any:
        # Protocol < 3 pickles name Python-2 modules (``__builtin__.set``): map them as
        # pickle.Unpickler.find_class does with fix_imports=True.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        fn = _ALLOWED.get((module, name))
        if fn is not None:
            return fn
        hint = ""
        if module.startswith("dnnlib.tflib"):
            hint = (
                " (a TensorFlow StyleGAN/StyleGAN2 pickle: convert it first, e.g. with NVlabs "
                "stylegan2-ada-pytorch legacy.py or rosinality's convert_weight.py)"
            )
        raise CheckpointError(
            f"refusing to load global '{module}.{name}' from the pickle: only tensors, plain "
            f"containers and NVlabs persistent networks are allowed, never code{hint}"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(
            "refusing a pickle persistent id: NVlabs network pickles do not use them"
        )


def restricted_load(f: BinaryIO) -> Any:
    """Unpickle ``f`` with :class:`RestrictedUnpickler`; every failure is a CheckpointError."""
    try:
        return RestrictedUnpickler(f).load()
    except CheckpointError:
        raise
    except Exception as e:  # truncated/garbled pickles raise many types
        if isinstance(e, EOFError) or "truncated" in str(e):
            raise CheckpointError(
                f"could not read the pickle: it is damaged (truncated: {type(e).__name__}: {e}); "
                "re-download or re-copy the file"
            ) from e
        raise CheckpointError(f"could not read the pickle: {type(e).__name__}: {e}") from e


# --------------------------------------------------------------------------- tree walking


def _flatten(node: PersistentNode, prefix: str = "") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for group in ("_parameters", "_buffers"):
        for k, v in (node.state.get(group) or {}).items():
            if v is None:
                continue
            if not isinstance(v, torch.Tensor):
                raise CheckpointError(f"{prefix}{k}: expected a tensor, got {type(v).__name__}")
            out[prefix + k] = v
    for k, child in node.children.items():
        if child is None:
            continue
        if not isinstance(child, PersistentNode):
            raise CheckpointError(f"{prefix}{k}: unexpected module type {type(child).__name__}")
        out.update(_flatten(child, f"{prefix}{k}."))
    return out


def read_nvlabs_pickle(
    f: BinaryIO, allow_stylegan3: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """Read ``G_ema`` of an NVlabs network pickle.

    Returns ``(state, kwargs)``: the flat NVlabs state dict and the constructor kwargs of the
    generator and its ``mapping`` / ``synthesis`` subnetworks (``kwargs["G"]``,
    ``kwargs["mapping"]``, ``kwargs["synthesis"]``; empty dicts when not recorded). Generators
    :func:`nvlabs_to_rosinality` cannot convert are refused, StyleGAN3 ones too unless
    ``allow_stylegan3`` (:func:`is_stylegan3_state`; :mod:`navcuda.models.nvlabs_stylegan3`
    reads their kwargs).
    """
    data = restricted_load(f)
    if isinstance(data, dict):
        g = data.get("G_ema")
        if g is None:
            raise CheckpointError(
                f"not a network pickle: no 'G_ema' entry; keys found: {sorted(map(str, data))[:20]}"
            )
    elif isinstance(data, PersistentNode):
        g = data
    else:
        raise CheckpointError(
            f"not a network pickle: it holds a {type(data).__name__}, expected a dict with 'G_ema'"
        )
    if not isinstance(g, PersistentNode):
        raise CheckpointError(f"'G_ema' is a {type(g).__name__}, not an NVlabs persistent network")
    state = _flatten(g)
    children = g.children
    kwargs = {"G": g.init_kwargs}
    for name in ("mapping", "synthesis"):
        child = children.get(name)
        kwargs[name] = child.init_kwargs if isinstance(child, PersistentNode) else {}
    if not (allow_stylegan3 and is_stylegan3_state(state)):
        _reject_unsupported(state, kwargs, g.class_name)
    return state, kwargs


_SG3_LAYER = re.compile(r"^synthesis\.L\d+_\d+_\d+\.")


def is_stylegan3_state(state: dict[str, torch.Tensor]) -> bool:
    """Whether a flat NVlabs state dict is a StyleGAN3 generator's (``training.networks_stylegan3``:
    Fourier-feature input ``synthesis.input.freqs``, layers ``synthesis.L{idx}_{size}_{ch}``)."""
    return "synthesis.input.freqs" in state or any(_SG3_LAYER.match(k) for k in state)


def _reject_unsupported(state: dict, kwargs: dict, class_name: str) -> None:
    if is_stylegan3_state(state):
        raise CheckpointError(
            "StyleGAN3 (alias-free) generators are not supported by the StyleGAN2 conversion; "
            "navcuda.load_generator reads them"
        )
    recorded = "c_dim" in kwargs["G"] or "c_dim" in kwargs["mapping"]
    c_dim = kwargs["G"].get("c_dim", kwargs["mapping"].get("c_dim", 0)) or 0
    if recorded and (c_dim > 0) != ("mapping.embed.weight" in state):
        raise CheckpointError(
            f"the pickle records c_dim={c_dim} but "
            f"{'has no' if c_dim else 'has a'} label embedding (mapping.embed.weight): "
            "the file is damaged or not an NVlabs StyleGAN2 generator"
        )
    arch = _synthesis_kwarg(kwargs, "architecture", "skip")
    if arch == "skip" and any(re.match(r"^synthesis\.b\d+\.skip\.", k) for k in state):
        arch = "resnet"
    if arch != "skip":
        raise CheckpointError(
            f"generator architecture {arch!r} is not supported; navcuda needs the 'skip' "
            "architecture of StyleGAN2 config F"
        )
    if "synthesis.b4.const" not in state or "mapping.fc0.weight" not in state:
        raise CheckpointError(
            f"'G_ema' ({class_name}) is not a StyleGAN2 generator: no synthesis.b4.const or "
            f"mapping.fc0.weight among its {len(state)} tensors (first: {sorted(state)[:5]})"
        )


def _synthesis_kwarg(kwargs: dict, key: str, default: Any) -> Any:
    """A synthesis kwarg from the synthesis network's own kwargs, else the generator's."""
    if key in kwargs["synthesis"]:
        return kwargs["synthesis"][key]
    g = kwargs["G"]
    nested = g.get("synthesis_kwargs")  # stylegan2-ada-pytorch nests them
    if isinstance(nested, dict) and key in nested:
        return nested[key]
    return g.get(key, default)  # stylegan3's networks_stylegan2 passes them flat


# --------------------------------------------------------------------------- conversion


def _resolutions(state: dict) -> list[int]:
    res = sorted({int(m.group(1)) for k in state if (m := re.match(r"^synthesis\.b(\d+)\.", k))})
    if not res or res[0] != 4 or any(b != 2 * a for a, b in zip(res, res[1:], strict=False)):
        raise CheckpointError(f"unexpected synthesis blocks b{res}: expected b4, b8, ..., bR")
    return res


def _get(state: dict, key: str) -> torch.Tensor:
    try:
        return state[key]
    except KeyError:
        raise CheckpointError(f"the network pickle lacks tensor '{key}'") from None


def nvlabs_to_rosinality(state: dict[str, torch.Tensor], taps: tuple[int, ...] = (1, 3, 3, 1)):
    """Convert a flat NVlabs ``G_ema`` state dict to navcuda's (rosinality) layout.

    Resample filters are not copied (navcuda's Generator builds its own) but checked to be the
    separable filter of ``taps``. Raises :class:`CheckpointError` for missing tensors.
    """
    out: dict[str, torch.Tensor] = {}
    n_fc = 0
    while f"mapping.fc{n_fc}.weight" in state:
        out[f"style.{n_fc + 1}.weight"] = _get(state, f"mapping.fc{n_fc}.weight")
        out[f"style.{n_fc + 1}.bias"] = _get(state, f"mapping.fc{n_fc}.bias")
        n_fc += 1
    if "mapping.w_avg" in state:
        out["w_avg"] = state["mapping.w_avg"]
    if "mapping.embed.weight" in state:  # conditional (stylegan2-ada c_dim > 0)
        out["embed.weight"] = state["mapping.embed.weight"]
        out["embed.bias"] = _get(state, "mapping.embed.bias")
    const = _get(state, "synthesis.b4.const")
    out["input.input"] = const.unsqueeze(0)

    expected = torch.outer(*(torch.tensor(taps, dtype=torch.float64),) * 2)
    expected = expected / expected.sum()

    def check_filter(key: str) -> None:
        f = state.get(key)
        if f is None:
            return
        f = f.double()
        if f.ndim == 1:
            f = torch.outer(f, f)
        if f.shape != expected.shape or not torch.allclose(f / f.sum(), expected, atol=1e-6):
            raise CheckpointError(
                f"{key} is not the {list(taps)} filter navcuda uses: {f.tolist()}"
            )

    def layer(src: str, dst: str, noise_idx: int) -> None:
        w = _get(state, f"{src}.weight")
        out[f"{dst}.conv.weight"] = w.unsqueeze(0)
        out[f"{dst}.conv.modulation.weight"] = _get(state, f"{src}.affine.weight")
        out[f"{dst}.conv.modulation.bias"] = _get(state, f"{src}.affine.bias")
        out[f"{dst}.activate.bias"] = _get(state, f"{src}.bias")
        if f"{src}.noise_strength" in state:
            strength = state[f"{src}.noise_strength"]
            if strength.numel() != 1:
                raise CheckpointError(
                    f"{src}.noise_strength should be one number, found shape "
                    f"{list(strength.shape)}: the pickle is damaged or not a StyleGAN2 generator"
                )
            out[f"{dst}.noise.weight"] = strength.reshape(1)
            out[f"noises.noise_{noise_idx}"] = _get(state, f"{src}.noise_const")[None, None]
        else:  # use_noise=False: no noise at all, equivalent to a zero strength
            out[f"{dst}.noise.weight"] = torch.zeros(1)
        check_filter(f"{src}.resample_filter")

    def torgb(src: str, dst: str) -> None:
        out[f"{dst}.conv.weight"] = _get(state, f"{src}.weight").unsqueeze(0)
        out[f"{dst}.conv.modulation.weight"] = _get(state, f"{src}.affine.weight")
        out[f"{dst}.conv.modulation.bias"] = _get(state, f"{src}.affine.bias")
        out[f"{dst}.bias"] = _get(state, f"{src}.bias").reshape(1, -1, 1, 1)

    res = _resolutions(state)
    layer("synthesis.b4.conv1", "conv1", 0)
    torgb("synthesis.b4.torgb", "to_rgb1")
    for j, r in enumerate(res[1:]):
        b = f"synthesis.b{r}"
        if f"{b}.torgb.weight" not in state:
            raise CheckpointError(
                f"{b} has no torgb: architecture 'orig' is not supported; navcuda needs the "
                "'skip' architecture of StyleGAN2 config F"
            )
        layer(f"{b}.conv0", f"convs.{2 * j}", 2 * j + 1)
        layer(f"{b}.conv1", f"convs.{2 * j + 1}", 2 * j + 2)
        torgb(f"{b}.torgb", f"to_rgbs.{j}")
        check_filter(f"{b}.resample_filter")
    return {k: v.detach().to(torch.float32).contiguous() for k, v in out.items()}


def nvlabs_config(state: dict[str, torch.Tensor], kwargs: dict[str, dict]):
    """The :class:`GeneratorConfig` of an NVlabs generator: from its kwargs, else its shapes.

    Returns ``None`` when no constructor kwargs were recorded (the caller infers from shapes).
    """
    from navcuda.models.stylegan2 import GeneratorConfig

    g, mk = kwargs["G"], dict(kwargs["mapping"])
    nested = g.get("mapping_kwargs")
    if isinstance(nested, dict):
        mk = {**nested, **mk}
    if not g and not kwargs["synthesis"]:
        return None
    if mk.get("layer_features") not in (None, g.get("w_dim")):
        raise CheckpointError(
            f"mapping layer_features={mk['layer_features']} differs from w_dim={g.get('w_dim')}: "
            "not supported"
        )
    if mk.get("activation", "lrelu") != "lrelu":
        raise CheckpointError(f"mapping activation {mk['activation']!r} is not supported")
    fc0 = _get(state, "mapping.fc0.weight")
    if fc0.ndim != 2:
        raise CheckpointError(
            f"mapping.fc0.weight should have 2 dimensions [w_dim, z_dim], found shape "
            f"{list(fc0.shape)}: the pickle is damaged or not a StyleGAN2 generator"
        )
    n_layers = sum(1 for k in state if re.match(r"^mapping\.fc\d+\.weight$", k))
    res = _resolutions(state)
    embed = state.get("mapping.embed.weight")
    c_dim = int(g.get("c_dim", mk.get("c_dim", 0)) or 0)
    if embed is not None and (embed.ndim != 2 or embed.shape[1] != c_dim):
        raise CheckpointError(
            f"mapping.embed.weight has shape {list(embed.shape)}, expected [embed_features, "
            f"c_dim={c_dim}]"
        )
    embed_dim = None if embed is None else int(embed.shape[0])
    if mk.get("embed_features") not in (None, embed_dim):
        raise CheckpointError(
            f"mapping embed_features={mk['embed_features']} but mapping.embed.weight has "
            f"{embed_dim} rows"
        )
    try:
        return GeneratorConfig(
            resolution=int(
                g.get("img_resolution", _synthesis_kwarg(kwargs, "img_resolution", res[-1]))
            ),
            c_dim=c_dim,
            embed_dim=embed_dim,
            z_dim=int(g.get("z_dim", fc0.shape[1] - (embed_dim or 0))),
            w_dim=int(g.get("w_dim", fc0.shape[0])),
            n_mlp=int(mk.get("num_layers", n_layers)),
            channel_base=int(_synthesis_kwarg(kwargs, "channel_base", 32768)),
            channel_max=int(_synthesis_kwarg(kwargs, "channel_max", 512)),
            lr_mlp=float(mk.get("lr_multiplier", 0.01)),
            conv_clamp=_opt_float(_synthesis_kwarg(kwargs, "conv_clamp", None)),
            img_channels=int(g.get("img_channels", 3)),
            blur_taps=tuple(
                int(t) if float(t).is_integer() else t
                for t in _synthesis_kwarg(kwargs, "resample_filter", [1, 3, 3, 1])
            ),
        )
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"unusable generator kwargs in the pickle: {e}") from e


def _opt_float(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isinf(v) else v

"""The config of a StyleGAN3 ``G_ema`` read from an NVlabs network pickle.

NVlabs' ``training.networks_stylegan3.Generator`` records its constructor kwargs (``z_dim``,
``c_dim``, ``w_dim``, ``img_resolution``, ``img_channels``, ``mapping_kwargs`` and the
synthesis / layer kwargs, flat); its ``synthesis`` and ``mapping`` children record theirs.
:func:`stylegan3_config` turns them into a
:class:`~navcuda.models.stylegan3_config.StyleGAN3Config`, refusing any kwarg navcuda's
implementation does not know (a fork's addition changes the network in ways navcuda cannot
honour) and children whose kwargs contradict the generator's. The tensors keep NVlabs' names:
:class:`navcuda.models.stylegan3.Generator` loads them as they are
(:func:`navcuda.models.checkpoints.load_generator`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from navcuda.models.nvlabs_pickle import CheckpointError
from navcuda.models.stylegan3_config import StyleGAN3Config

__all__ = ["stylegan3_config"]

_TOP = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
_MAPPING = {"num_layers": "mapping_layers", "lr_multiplier": "mapping_lr_multiplier",
            "w_avg_beta": "w_avg_beta"}  # fmt: skip
# The SynthesisNetwork / SynthesisLayer kwargs: every config field not named above.
_SYNTHESIS = tuple(
    f.name for f in fields(StyleGAN3Config) if f.name not in (*_TOP, *_MAPPING.values())
)


def stylegan3_config(kwargs: Mapping[str, Mapping[str, Any]]) -> StyleGAN3Config:
    """The config of a StyleGAN3 generator from the constructor kwargs recorded in its pickle
    (``kwargs["G"]``, ``kwargs["synthesis"]``, ``kwargs["mapping"]`` as
    :func:`~navcuda.models.nvlabs_pickle.read_nvlabs_pickle` returns them; NVlabs' defaults for
    what is not recorded). Raises :class:`CheckpointError` naming unknown or contradictory kwargs.
    """
    g = dict(kwargs.get("G") or {})
    syn = dict(kwargs.get("synthesis") or {})
    mapping = dict(kwargs.get("mapping") or {})
    if not g and not syn:
        raise CheckpointError(
            "the pickle records no constructor kwargs for its StyleGAN3 generator, so its layer "
            "schedule (sampling rates, cutoffs, filters, padding) cannot be derived; save the "
            "network with NVlabs' stylegan3 code, which records them"
        )
    values: dict[str, Any] = {}
    unknown: list[str] = []

    def take(src: Mapping[str, Any], where: str, names: Mapping[str, str]) -> None:
        for key, value in src.items():
            field = names.get(key)
            if field is None:
                unknown.append(f"{where}.{key}")
            elif field in values and values[field] != value:
                raise CheckpointError(
                    f"contradictory StyleGAN3 kwargs: {where}.{key}={value!r} but the generator "
                    f"records {field}={values[field]!r}"
                )
            else:
                values[field] = value

    same = {k: k for k in (*_TOP, *_SYNTHESIS)}
    nested = g.pop("mapping_kwargs", None) or {}
    take(g, "G", same)
    take(nested, "G.mapping_kwargs", _MAPPING)
    take(syn, "synthesis", {k: k for k in ("w_dim", "img_resolution", "img_channels", *_SYNTHESIS)})
    num_ws = mapping.pop("num_ws", None)
    take(mapping, "mapping", {**{k: k for k in ("z_dim", "c_dim", "w_dim")}, **_MAPPING})
    if unknown:
        raise CheckpointError(
            f"unsupported StyleGAN3 constructor kwargs {unknown}: navcuda implements NVlabs' "
            "training.networks_stylegan3, whose Generator takes "
            f"{[*_TOP, 'mapping_kwargs', *_SYNTHESIS]} and mapping_kwargs {list(_MAPPING)}"
        )
    missing = [k for k in ("z_dim", "w_dim", "img_resolution", "img_channels") if k not in values]
    if missing:
        raise CheckpointError(f"the StyleGAN3 generator's kwargs lack {missing}")
    try:
        config = StyleGAN3Config(**values)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"unusable StyleGAN3 kwargs in the pickle: {e}") from e
    if num_ws is not None and num_ws != config.num_ws:
        raise CheckpointError(
            f"the mapping network records num_ws={num_ws}, but num_layers={config.num_layers} "
            f"makes {config.num_ws}"
        )
    return config

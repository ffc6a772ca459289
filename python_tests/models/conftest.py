"""Helpers to build fake NVlabs network pickles with the pickle structure real files have.

Real ``network-snapshot-*.pkl`` files are ``pickle.dump`` of a dict whose networks are
``torch_utils.persistence`` objects, each pickled as ``_reconstruct_persistent_obj(meta)`` with
``meta = dict(type='class', version=6, module_src=..., class_name=..., state=obj.__dict__)``;
kwargs are ``dnnlib.util.EasyDict``. To emit the same globals without NVlabs' code, fake
``torch_utils.persistence`` and ``dnnlib.util`` modules are put in ``sys.modules`` only while
pickling (pickle records a function by module and name and checks it can find it there).
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import types
from collections import OrderedDict

import pytest
import torch

from navcuda.models.stylegan2 import Generator


def _reconstruct_persistent_obj(meta):  # pragma: no cover - only its name is pickled
    raise AssertionError("the fake NVlabs reconstructor must never be called")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
_reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"


class EasyDict(dict):
    """Pickles as ``dnnlib.util.EasyDict`` (NEWOBJ + SETITEMS), as NVlabs kwargs do."""


EasyDict.__module__ = "dnnlib.util"
EasyDict.__qualname__ = "EasyDict"


@contextlib.contextmanager
def fake_nvlabs_modules():
    """Register fake ``torch_utils.persistence`` and ``dnnlib.util`` while pickling."""
    mods = {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": types.ModuleType("torch_utils.persistence"),
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": types.ModuleType("dnnlib.util"),
    }
    mods["torch_utils"].persistence = mods["torch_utils.persistence"]
    mods["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    mods["dnnlib"].util = mods["dnnlib.util"]
    mods["dnnlib.util"].EasyDict = EasyDict
    saved = {name: sys.modules.get(name) for name in mods}
    sys.modules.update(mods)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


class Persistent:
    """A node pickled exactly like a ``torch_utils.persistence`` object."""

    def __init__(self, class_name: str, state: dict, module_src: str = "") -> None:
        self.class_name = class_name
        self.state = state
        self.module_src = module_src

    def __reduce__(self):
        meta = dict(
            type="class",
            version=6,
            module_src=self.module_src,
            class_name=self.class_name,
            state=self.state,
        )
        return (_reconstruct_persistent_obj, (meta,))


_BUFFERS = (
    "w_avg", "resample_filter", "noise_const", "freqs", "phases", "transform", "magnitude_ema",
    "up_filter", "down_filter",
)  # fmt: skip


def module_state(params=None, buffers=None, modules=None, init_kwargs=None, **attrs) -> dict:
    """The ``__dict__`` of an ``nn.Module`` as NVlabs pickles it (hooks, kwargs, attributes)."""
    return {
        "training": False,
        "_parameters": OrderedDict(
            (k, torch.nn.Parameter(v.clone(), requires_grad=False))
            for k, v in (params or {}).items()
        ),
        "_buffers": OrderedDict((k, v.clone()) for k, v in (buffers or {}).items()),
        "_non_persistent_buffers_set": set(),
        "_backward_hooks": OrderedDict(),
        "_forward_hooks": OrderedDict(),
        "_forward_pre_hooks": OrderedDict(),
        "_state_dict_hooks": OrderedDict(),
        "_load_state_dict_pre_hooks": OrderedDict(),
        "_modules": OrderedDict(modules or {}),
        "_init_args": (),
        "_init_kwargs": EasyDict(init_kwargs or {}),
        **attrs,
    }


def _class_name(path: str) -> str:
    last = path.rsplit(".", 1)[-1]
    if path == "":
        return "Generator"
    if last == "mapping":
        return "MappingNetwork"
    if last == "synthesis":
        return "SynthesisNetwork"
    if last.startswith("fc") or last in ("affine", "embed"):
        return "FullyConnectedLayer"
    if last.startswith("b") and last[1:].isdigit():
        return "SynthesisBlock"
    if last == "torgb":
        return "ToRGBLayer"
    if last == "input":
        return "SynthesisInput"
    return "SynthesisLayer"


def build_tree(flat: dict[str, torch.Tensor], kwargs_by_path=None, module_src="") -> Persistent:
    """Nest a flat NVlabs state dict into persistent nodes (``kwargs_by_path[""]`` = G's)."""
    kwargs_by_path = kwargs_by_path or {}
    tree: dict = {}
    for key, value in flat.items():
        *path, leaf = key.split(".")
        node = tree
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = value

    def make(node: dict, path: str) -> Persistent:
        params, buffers, modules = {}, {}, {}
        for k, v in node.items():
            if isinstance(v, dict):
                modules[k] = make(v, f"{path}.{k}" if path else k)
            elif k in _BUFFERS:
                buffers[k] = v
            else:
                params[k] = v
        state = module_state(params, buffers, modules, kwargs_by_path.get(path))
        return Persistent(_class_name(path), state, module_src)

    return make(tree, "")


def rosinality_to_nvlabs(g: Generator) -> dict[str, torch.Tensor]:
    """Inverse of the loader's conversion, written independently: navcuda -> NVlabs names."""
    sd = {k: v.detach().clone() for k, v in g.state_dict().items()}
    cfg = g.config
    nv: dict[str, torch.Tensor] = {}
    for i in range(cfg.n_mlp):
        nv[f"mapping.fc{i}.weight"] = sd[f"style.{i + 1}.weight"]
        nv[f"mapping.fc{i}.bias"] = sd[f"style.{i + 1}.bias"]
    nv["mapping.w_avg"] = sd["w_avg"]
    if cfg.c_dim:
        nv["mapping.embed.weight"] = sd["embed.weight"]
        nv["mapping.embed.bias"] = sd["embed.bias"]
    taps = torch.tensor(cfg.blur_taps, dtype=torch.float32)
    filt = torch.outer(taps, taps) / torch.outer(taps, taps).sum()

    def layer(dst: str, src: str, noise: int) -> None:
        nv[f"{dst}.weight"] = sd[f"{src}.conv.weight"][0]
        nv[f"{dst}.noise_strength"] = sd[f"{src}.noise.weight"][0]
        nv[f"{dst}.bias"] = sd[f"{src}.activate.bias"]
        nv[f"{dst}.resample_filter"] = filt
        nv[f"{dst}.noise_const"] = sd[f"noises.noise_{noise}"][0, 0]
        nv[f"{dst}.affine.weight"] = sd[f"{src}.conv.modulation.weight"]
        nv[f"{dst}.affine.bias"] = sd[f"{src}.conv.modulation.bias"]

    def torgb(dst: str, src: str) -> None:
        nv[f"{dst}.weight"] = sd[f"{src}.conv.weight"][0]
        nv[f"{dst}.bias"] = sd[f"{src}.bias"].flatten()
        nv[f"{dst}.affine.weight"] = sd[f"{src}.conv.modulation.weight"]
        nv[f"{dst}.affine.bias"] = sd[f"{src}.conv.modulation.bias"]

    nv["synthesis.b4.const"] = sd["input.input"][0]
    nv["synthesis.b4.resample_filter"] = filt
    layer("synthesis.b4.conv1", "conv1", 0)
    torgb("synthesis.b4.torgb", "to_rgb1")
    for j, res in enumerate(cfg.resolutions[1:]):
        nv[f"synthesis.b{res}.resample_filter"] = filt
        layer(f"synthesis.b{res}.conv0", f"convs.{2 * j}", 2 * j + 1)
        layer(f"synthesis.b{res}.conv1", f"convs.{2 * j + 1}", 2 * j + 2)
        torgb(f"synthesis.b{res}.torgb", f"to_rgbs.{j}")
    return nv


def nvlabs_kwargs(g: Generator, with_kwargs: bool = True, **g_overrides) -> dict[str, dict]:
    """Constructor kwargs as stylegan2-ada-pytorch records them (nested synthesis_kwargs)."""
    if not with_kwargs:
        return {}
    cfg = g.config
    syn = EasyDict(
        channel_base=cfg.channel_base,
        channel_max=cfg.channel_max,
        num_fp16_res=4,
        conv_clamp=cfg.conv_clamp,
    )
    mapping = EasyDict(num_layers=cfg.n_mlp)
    if cfg.c_dim:
        mapping["embed_features"] = cfg.embed_dim
    gk = EasyDict(
        z_dim=cfg.z_dim,
        c_dim=cfg.c_dim,
        w_dim=cfg.w_dim,
        img_resolution=cfg.resolution,
        img_channels=cfg.img_channels,
        mapping_kwargs=mapping,
        synthesis_kwargs=syn,
    )
    gk.update(g_overrides)
    return {
        "": gk,
        "mapping": EasyDict(
            z_dim=cfg.z_dim, c_dim=gk["c_dim"], w_dim=cfg.w_dim, num_ws=cfg.num_ws, **mapping
        ),
        "synthesis": EasyDict(
            w_dim=cfg.w_dim, img_resolution=cfg.resolution, img_channels=cfg.img_channels, **syn
        ),
    }


def stylegan3_kwargs_by_path(g_kwargs: dict) -> dict[str, EasyDict]:
    """The init kwargs a ``training.networks_stylegan3.Generator(**g_kwargs)`` and its
    ``synthesis`` / ``mapping`` children record (NVlabs' persistence keeps each constructor's
    own kwargs): ``{"": G's, "synthesis": ..., "mapping": ...}``."""
    g = EasyDict(g_kwargs)
    mapping_kwargs = EasyDict(g.get("mapping_kwargs", {}))
    g["mapping_kwargs"] = mapping_kwargs
    top = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs")
    synthesis = EasyDict({k: v for k, v in g.items() if k not in top})
    synthesis.update(w_dim=g["w_dim"], img_resolution=g["img_resolution"],
                     img_channels=g["img_channels"])  # fmt: skip
    num_ws = synthesis.get("num_layers", 14) + 2
    mapping = EasyDict(z_dim=g["z_dim"], c_dim=g["c_dim"], w_dim=g["w_dim"], num_ws=num_ws)
    mapping.update(mapping_kwargs)
    return {"": g, "synthesis": synthesis, "mapping": mapping}


def build_stylegan3_tree(
    flat: dict[str, torch.Tensor], g_kwargs: dict, module_src=""
) -> Persistent:
    """A StyleGAN3 ``G_ema`` as NVlabs pickles it: :func:`build_tree` with the recorded kwargs
    of :func:`stylegan3_kwargs_by_path`, plus what real SynthesisLayers carry besides tensors:
    ``None`` buffers for one-tap filters, and numpy arrays and scalars among the attributes (of
    the kinds real layers keep: sizes, rates, padding; navcuda reads none of them, so their
    values here are placeholders)."""
    import numpy as np

    tree = build_tree(flat, stylegan3_kwargs_by_path(g_kwargs), module_src)
    synthesis = tree.state["_modules"]["synthesis"]
    names = [k for k in synthesis.state["_modules"] if k.startswith("L")]
    synthesis.state["layer_names"] = names
    for name in names:
        layer = synthesis.state["_modules"][name]
        for buf in ("up_filter", "down_filter"):
            layer.state["_buffers"].setdefault(buf, None)
        size = int(name.split("_")[1])
        layer.state.update(
            in_size=np.broadcast_to(np.asarray(size), [2]).copy(),
            out_size=np.broadcast_to(np.asarray(size), [2]).copy(),
            tmp_sampling_rate=np.float64(2.0 * size),
            padding=[np.int64(1), np.int64(0), np.int64(1), np.int64(0)],
        )
    return tree


def write_network_pickle(path, g_ema: Persistent, protocol: int = 4, **extra) -> None:
    """A snapshot dict like NVlabs' training loop writes, with G, D and augment_pipe."""
    d_node = Persistent(
        "Discriminator",
        module_state(
            params={"b4.fc.weight": torch.randn(4, 4)},
            init_kwargs={"c_dim": 0, "img_resolution": 16, "img_channels": 3},
            block_resolutions=[16, 8, 4],
        ),
    )
    import numpy as np

    aug = Persistent(
        "AugmentPipe",
        module_state(
            buffers={"p": torch.zeros([])},
            init_kwargs={"xflip": 1, "rotate90": 1},
            Hz_geom_np=np.arange(6, dtype=np.float64).reshape(2, 3),
            scale_std=np.float32(0.2),
        ),
    )
    data = {
        "G": g_ema,
        "D": d_node,
        "G_ema": g_ema,
        "augment_pipe": aug,
        "training_set_kwargs": EasyDict(
            class_name="training.dataset.ImageFolderDataset",
            path="~/datasets/toy.zip",
            use_labels=False,
            max_size=1000,
            xflip=False,
            resolution=16,
        ),
        "progress": {"cur_nimg": torch.tensor(12345)},
    }
    data.update(extra)
    with fake_nvlabs_modules(), open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)


@pytest.fixture
def nv():
    """The helpers above, for tests (``--import-mode=importlib`` cannot import conftest)."""
    return types.SimpleNamespace(
        EasyDict=EasyDict,
        Persistent=Persistent,
        module_state=module_state,
        build_tree=build_tree,
        rosinality_to_nvlabs=rosinality_to_nvlabs,
        nvlabs_kwargs=nvlabs_kwargs,
        stylegan3_kwargs_by_path=stylegan3_kwargs_by_path,
        build_stylegan3_tree=build_stylegan3_tree,
        write_network_pickle=write_network_pickle,
        fake_nvlabs_modules=fake_nvlabs_modules,
    )

"""NVlabs network pickles: restricted unpickling, conversion, refusing unsafe/unsupported files."""

from __future__ import annotations

import math
import os
import pickle
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from navcuda.models import CheckpointError, Generator, detect_format, load_generator
from navcuda.models.nvlabs_pickle import PersistentNode, restricted_load


def _tiny(tiny_config, **kw) -> Generator:
    torch.manual_seed(0)
    g = Generator(tiny_config(**kw)).eval()
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight") or name.endswith("bias") and "modulation" not in name:
                p.normal_(0, 0.1)
    g.update_w_avg(256)
    return g


def _z(g: Generator, n: int = 3) -> torch.Tensor:
    return torch.randn(n, g.config.z_dim, generator=torch.Generator().manual_seed(7))


# ------------------------------------------------------------------ NVlabs reference forward
# An independent re-implementation of stylegan2-ada-pytorch's G_ema forward (training/networks.py)
# on the NVlabs state dict, in plain torch: the loader's conversion must reproduce its images.


def _lrelu(x, b, clamp=None):
    y = F.leaky_relu(x + b.reshape(1, -1, *([1] * (x.ndim - 2))), 0.2) * math.sqrt(2)
    return y.clamp(-clamp, clamp) if clamp is not None else y


def _fc(nv, name, x, lr=1.0):
    w, b = nv[f"{name}.weight"], nv[f"{name}.bias"]
    return x @ (w * (lr / math.sqrt(w.shape[1]))).t() + b * lr


def _fir(x, f, pad0, pad1):
    c = x.shape[1]
    x = F.pad(x, [pad0, pad1, pad0, pad1])
    return F.conv2d(x, f.flip([0, 1])[None, None].repeat(c, 1, 1, 1), groups=c)


def _nv_layer(nv, name, x, w, up, clamp):
    styles = _fc(nv, f"{name}.affine", w)
    weight = nv[f"{name}.weight"]  # no 1/sqrt(fan_in): NVlabs demodulates the raw product
    wb = weight[None] * styles[:, None, :, None, None]
    wb = wb * (wb.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()[:, :, None, None, None]
    out = []
    for i in range(x.shape[0]):
        if up:  # conv2d_resample(up=2, padding=1): transposed conv, then the [1,3,3,1] FIR x4
            y = F.conv_transpose2d(x[i : i + 1], wb[i].transpose(0, 1), stride=2)
            y = _fir(y, nv[f"{name}.resample_filter"] * 4, 1, 1)
        else:
            y = F.conv2d(x[i : i + 1], wb[i], padding=1)
        out.append(y)
    x = torch.cat(out) + nv[f"{name}.noise_const"] * nv[f"{name}.noise_strength"]
    return _lrelu(x, nv[f"{name}.bias"], clamp)


def _nv_torgb(nv, name, x, w, clamp):
    weight = nv[f"{name}.weight"]
    styles = _fc(nv, f"{name}.affine", w) / math.sqrt(weight.shape[1])
    wb = weight[None] * styles[:, None, :, None, None]
    y = torch.cat([F.conv2d(x[i : i + 1], wb[i]) for i in range(x.shape[0])])
    y = y + nv[f"{name}.bias"].reshape(1, -1, 1, 1)
    return y.clamp(-clamp, clamp) if clamp is not None else y


def nvlabs_forward(nv, z, resolution, n_mlp, lr_mlp=0.01, clamp=None, c=None):
    def norm(v):
        return v * (v.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()

    x = norm(z)
    if c is not None:  # MappingNetwork: embed (a linear layer, lr 1), normalise, concatenate
        x = torch.cat([x, norm(_fc(nv, "mapping.embed", c))], dim=1)
    for i in range(n_mlp):
        x = F.leaky_relu(_fc(nv, f"mapping.fc{i}", x, lr_mlp), 0.2) * math.sqrt(2)
    w = x
    x = nv["synthesis.b4.const"][None].expand(z.shape[0], -1, -1, -1)
    x = _nv_layer(nv, "synthesis.b4.conv1", x, w, False, clamp)
    img = _nv_torgb(nv, "synthesis.b4.torgb", x, w, clamp)
    res = 8
    while res <= resolution:
        b = f"synthesis.b{res}"
        x = _nv_layer(nv, f"{b}.conv0", x, w, True, clamp)
        x = _nv_layer(nv, f"{b}.conv1", x, w, False, clamp)
        f = nv[f"{b}.resample_filter"] * 4
        up = torch.zeros(img.shape[0], img.shape[1], img.shape[2] * 2, img.shape[3] * 2)
        up[:, :, ::2, ::2] = img  # upsample2d: zero-stuff, pad (2, 1), FIR with gain 4
        img = _fir(up, f, 2, 1) + _nv_torgb(nv, f"{b}.torgb", x, w, clamp)
        res *= 2
    return img


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_round_trip_matches_navcuda_and_nvlabs(tmp_path, tiny_config, nv, protocol):
    g = _tiny(tiny_config)
    flat = nv.rosinality_to_nvlabs(g)
    marker = tmp_path / "module_src_ran"
    # The pickled module source must never run: if it did, it would create the marker.
    src = f"open({str(marker)!r}, 'w').close()\n"
    path = tmp_path / "network-snapshot-000100.pkl"
    nv.write_network_pickle(path, nv.build_tree(flat, nv.nvlabs_kwargs(g), src), protocol)
    assert detect_format(path) == "nvlabs-pickle"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # kwargs and w_avg present: no warning expected
        loaded = load_generator(path)
    assert not marker.exists()
    assert loaded.config == g.config
    torch.testing.assert_close(loaded.w_avg, g.w_avg, rtol=0, atol=0)
    z = _z(g)
    with torch.no_grad():
        ours = g(z, noise_mode="const")
        assert torch.equal(loaded(z, noise_mode="const"), ours)
        ref = nvlabs_forward(flat, z, g.config.resolution, g.config.n_mlp)
    # Only the 1e-8 in the demodulation norm differs (NVlabs skips the 1/sqrt(fan_in) scale).
    torch.testing.assert_close(ref, ours, rtol=1e-5, atol=1e-5)


def test_round_trip_conv_clamp_and_stylegan3_repo_kwargs(tmp_path, tiny_config, nv):
    # stylegan3's networks_stylegan2.Generator takes synthesis kwargs flat in G's kwargs.
    g = _tiny(tiny_config, conv_clamp=0.3)
    kw = nv.nvlabs_kwargs(g)
    syn = kw[""].pop("synthesis_kwargs")
    kw[""].update(syn, fused_modconv_default="inference_only")
    kw["synthesis"] = nv.EasyDict()
    path = tmp_path / "sg3repo.pkl"
    nv.write_network_pickle(path, nv.build_tree(nv.rosinality_to_nvlabs(g), kw))
    loaded = load_generator(path)
    assert loaded.config.conv_clamp == pytest.approx(0.3)
    z = _z(g)
    with torch.no_grad():
        out = g(z)
        assert torch.equal(loaded(z), out)
        ref = nvlabs_forward(nv.rosinality_to_nvlabs(g), z, 16, 2, clamp=0.3)
    assert (out.abs() >= 0.3 - 1e-6).any()  # the clamp is active somewhere
    torch.testing.assert_close(ref, out, rtol=1e-5, atol=1e-5)


def test_round_trip_without_kwargs_infers_channel_map(tmp_path, tiny_config, nv):
    g = _tiny(tiny_config, channel_map={4: 16, 8: 32, 16: 24})
    flat = nv.rosinality_to_nvlabs(g)
    del flat["mapping.w_avg"]
    path = tmp_path / "nokwargs.pkl"
    nv.write_network_pickle(path, nv.build_tree(flat, {}))
    with pytest.warns(UserWarning) as rec:
        loaded = load_generator(path)
    msgs = " ".join(str(r.message) for r in rec)
    assert "no constructor kwargs" in msgs and "w_avg" in msgs
    assert loaded.config.channel_map == {4: 16, 8: 32, 16: 24}
    z = _z(g)
    with torch.no_grad():
        assert torch.equal(loaded(z), g(z))
    ref_w_avg = Generator(g.config).eval()
    ref_w_avg.load_state_dict(g.state_dict())
    torch.testing.assert_close(loaded.w_avg, ref_w_avg.update_w_avg())


def test_restricted_load_gives_inert_nodes(tmp_path, tiny_config, nv):
    g = _tiny(tiny_config)
    path = tmp_path / "n.pkl"
    nv.write_network_pickle(path, nv.build_tree(nv.rosinality_to_nvlabs(g), nv.nvlabs_kwargs(g)))
    with open(path, "rb") as f:
        data = restricted_load(f)
    assert isinstance(data["G_ema"], PersistentNode)
    assert data["G_ema"].class_name == "Generator"
    assert data["training_set_kwargs"]["resolution"] == 16
    aug = data["augment_pipe"].state
    np.testing.assert_array_equal(aug["Hz_geom_np"], np.arange(6.0).reshape(2, 3))
    assert aug["scale_std"] == np.float32(0.2)
    params = data["G_ema"].children["mapping"].children["fc0"].state["_parameters"]
    assert type(params["weight"]) is torch.Tensor  # not a Parameter: nothing requires grad


# ------------------------------------------------------------------ unsupported generators


def test_incomplete_stylegan3_refused(tmp_path, nv):
    # A StyleGAN3 G_ema goes to navcuda's StyleGAN3 (python_tests/models/test_stylegan3.py);
    # this one records too few kwargs to derive its architecture.
    flat = {
        "mapping.fc0.weight": torch.randn(8, 8),
        "mapping.fc0.bias": torch.zeros(8),
        "mapping.w_avg": torch.zeros(8),
        "synthesis.input.affine.weight": torch.randn(4, 8),
        "synthesis.input.affine.bias": torch.zeros(4),
        "synthesis.input.freqs": torch.randn(8, 2),
        "synthesis.input.phases": torch.randn(8),
        "synthesis.input.transform": torch.eye(3),
        "synthesis.L0_36_512.weight": torch.randn(8, 8, 3, 3),
        "synthesis.L0_36_512.bias": torch.zeros(8),
    }
    tree = nv.build_tree(flat, {"": nv.EasyDict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16)})
    # StyleGAN3 layers keep numpy arrays and numpy scalars among their attributes.
    tree.state["_modules"]["synthesis"].state["_modules"]["L0_36_512"].state.update(
        in_size=np.broadcast_to(np.asarray(36), [2]).copy(), in_sampling_rate=np.float64(16.0)
    )
    path = tmp_path / "stylegan3-t-ffhq.pkl"
    nv.write_network_pickle(path, tree)
    with pytest.raises(
        CheckpointError, match=r"StyleGAN3 generator's kwargs lack \['img_channels'\]"
    ):
        load_generator(path)


@pytest.mark.parametrize("with_kwargs", [True, False])
def test_conditional_round_trip_matches_nvlabs(tmp_path, tiny_config, nv, with_kwargs):
    g = _tiny(tiny_config, c_dim=10, embed_dim=24)
    with torch.no_grad():
        g.embed.bias.normal_(0, 0.3)
    flat = nv.rosinality_to_nvlabs(g)
    path = tmp_path / "cond.pkl"
    nv.write_network_pickle(path, nv.build_tree(flat, nv.nvlabs_kwargs(g, with_kwargs)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # without kwargs: "inferred from shapes"
        loaded = load_generator(path)
    assert loaded.config.c_dim == 10 and loaded.config.embed_dim == 24
    assert loaded.config.z_dim == g.config.z_dim and loaded.num_classes == 10
    z, labels = _z(g), torch.tensor([0, 9, 4])
    c = F.one_hot(labels, 10).float()
    with torch.no_grad():
        ours = g(z, c=labels)
        assert torch.equal(loaded(z, c=labels), ours)
        ref = nvlabs_forward(flat, z, g.config.resolution, g.config.n_mlp, c=c)
    torch.testing.assert_close(ref, ours, rtol=1e-5, atol=1e-5)


def test_conditional_pickle_contradictions_refused(tmp_path, tiny_config, nv):
    g = _tiny(tiny_config, c_dim=10)
    flat = nv.rosinality_to_nvlabs(g)
    kw = nv.nvlabs_kwargs(g, c_dim=7)
    path = tmp_path / "bad.pkl"
    nv.write_network_pickle(path, nv.build_tree(flat, kw))
    with pytest.raises(CheckpointError, match=r"embed.weight has shape \[32, 10\].*c_dim=7"):
        load_generator(path)
    del flat["mapping.embed.weight"], flat["mapping.embed.bias"]
    nv.write_network_pickle(path, nv.build_tree(flat, nv.nvlabs_kwargs(g)))
    with pytest.raises(CheckpointError, match="c_dim=10 but has no label embedding"):
        load_generator(path)


def test_resnet_architecture_rejected(tmp_path, tiny_config, nv):
    g = _tiny(tiny_config)
    kw = nv.nvlabs_kwargs(g)
    kw["synthesis"]["architecture"] = "resnet"
    path = tmp_path / "resnet.pkl"
    nv.write_network_pickle(path, nv.build_tree(nv.rosinality_to_nvlabs(g), kw))
    with pytest.raises(CheckpointError, match="architecture 'resnet' is not supported"):
        load_generator(path)


def test_pickle_without_g_ema(tmp_path, nv):
    path = tmp_path / "noG.pkl"
    with nv.fake_nvlabs_modules(), open(path, "wb") as f:
        pickle.dump({"G": nv.Persistent("Generator", nv.module_state()), "D": 1}, f)
    with pytest.raises(CheckpointError, match=r"no 'G_ema' entry; keys found: \['D', 'G'\]"):
        load_generator(path)


def test_wrong_shape_in_pickle_names_key(tmp_path, tiny_config, nv):
    g = _tiny(tiny_config)
    flat = nv.rosinality_to_nvlabs(g)
    flat["synthesis.b16.conv1.affine.weight"] = torch.randn(16, 31)
    path = tmp_path / "bad.pkl"
    nv.write_network_pickle(path, nv.build_tree(flat, nv.nvlabs_kwargs(g)))
    with pytest.raises(
        CheckpointError,
        match=r"'convs\.3\.conv\.modulation\.weight'.*"
        r"expected \[16, 32\], found \[16, 31\]",
    ):
        load_generator(path)


# ------------------------------------------------------------------ malicious pickles


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "nested"])
def test_malicious_pickle_refused_without_side_effect(tmp_path, tiny_config, nv, kind):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    if kind == "os.system":
        payload = _Evil(os.system, f"touch {marker}")
        data = {"G_ema": payload}
    elif kind == "builtins.eval":
        payload = _Evil(eval, f"open({str(marker)!r}, 'w').close()")
        data = {"G_ema": payload}
    else:  # hidden in an otherwise valid generator's attributes
        g = _tiny(tiny_config)
        tree = nv.build_tree(nv.rosinality_to_nvlabs(g), nv.nvlabs_kwargs(g))
        tree.state["sneaky"] = _Evil(os.system, f"touch {marker}")
        data = {"G_ema": tree}
    with nv.fake_nvlabs_modules(), open(path, "wb") as f:
        pickle.dump(data, f)
    refused = "builtins.eval" if kind == "builtins.eval" else f"{os.system.__module__}.system"
    with pytest.raises(CheckpointError, match=f"refusing to load global '{refused}'"):
        load_generator(path)
    assert not marker.exists()


def test_malicious_nested_storage_refused(tmp_path):
    marker = tmp_path / "pwned"
    # A storage blob in torch.save's legacy format whose body is a malicious pickle.
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    blob = magic + pickle.dumps(_Evil(os.system, f"touch {marker}"), protocol=2)

    class EvilStorage:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (blob,))

    path = tmp_path / "evil_storage.pkl"
    path.write_bytes(pickle.dumps({"G_ema": EvilStorage()}))
    with pytest.raises(CheckpointError, match="tensor storage"):
        load_generator(path)
    assert not marker.exists()


def test_persistent_id_and_tensorflow_pickles_refused(tmp_path):
    pid = tmp_path / "pid.pkl"
    pid.write_bytes(b"\x80\x02X\x03\x00\x00\x00fooQ.")  # BINPERSID
    with pytest.raises(CheckpointError, match="persistent id"):
        load_generator(pid)
    tf = tmp_path / "stylegan2-ffhq-config-f.pkl"
    tf.write_bytes(b"\x80\x02cdnnlib.tflib.network\nNetwork\n)\x81.")
    with pytest.raises(CheckpointError, match="TensorFlow"):
        load_generator(tf)


def test_truncated_pickle(tmp_path, tiny_config, nv):
    g = _tiny(tiny_config)
    path = tmp_path / "trunc.pkl"
    nv.write_network_pickle(path, nv.build_tree(nv.rosinality_to_nvlabs(g), nv.nvlabs_kwargs(g)))
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="could not read the pickle"):
        load_generator(path)

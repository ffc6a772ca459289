"""Direction-set files: round trips, validation, fingerprint refusal, official eigenvectors."""

from __future__ import annotations

import copy

import pytest
import torch

from navcuda.discover import discover
from navcuda.io.directions import DirectionSet, DirectionSetError, load_official_eigenvectors
from navcuda.models.fingerprint import model_fingerprint
from navcuda.models.layers import layer_weight
from navcuda.shift import generate


def _svd_set(g, k=4, calibrate=False):
    return discover(g, "convs.3", method="svd", k=k, calibrate=calibrate)


def test_round_trip(tmp_path, tiny_generator):
    ds = _svd_set(tiny_generator)
    ds.names[1] = "nose length"
    ds.extra["note"] = {"a": [1, 2]}
    path = ds.save(tmp_path / "dirs.nav")
    again = DirectionSet.load(path)
    assert torch.equal(again.coefficients, ds.coefficients)
    assert torch.equal(again.values, ds.values)
    assert torch.equal(again.amplitudes.isnan(), ds.amplitudes.isnan())
    assert again.names == ds.names and again.extra == ds.extra
    assert (again.layer, again.basis, again.method) == ("convs.3", "svd", "svd")
    assert again.fingerprint == model_fingerprint(tiny_generator)
    assert again.by_name("Nose Length").name == "nose length"
    assert not list(tmp_path.glob(".*.tmp"))
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(
        generate(tiny_generator, z, again[1], 3.0), generate(tiny_generator, z, ds[1], 3.0)
    )


def test_fingerprint_refusal(tiny_generator):
    ds = _svd_set(tiny_generator)
    ds.check_compatible(tiny_generator)
    other = copy.deepcopy(tiny_generator)
    with torch.no_grad():
        layer_weight(other, 0).add_(1e-3)
    with pytest.raises(DirectionSetError, match="allow_other_model"):
        ds.check_compatible(other)
    ds.check_compatible(other, allow_other_model=True)


def test_shape_refusal(tiny_generator, tiny_config):
    from navcuda.models.stylegan2 import Generator

    ds = _svd_set(tiny_generator)
    wider = Generator(tiny_config(channel_base=512))
    with pytest.raises(DirectionSetError, match="weight shape"):
        ds.check_compatible(wider, allow_other_model=True)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="navcuda discover"):
        DirectionSet.load(tmp_path / "nope.nav")
    junk = tmp_path / "junk.nav"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(DirectionSetError, match="not a navcuda direction set"):
        DirectionSet.load(junk)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.nav"
    save_file({"x": torch.ones(2)}, foreign)
    with pytest.raises(DirectionSetError, match="not a navcuda direction set"):
        DirectionSet.load(foreign)
    future = tmp_path / "future.nav"
    save_file(
        {"coefficients": torch.ones(1, 2), "amplitudes": torch.ones(1)},
        future,
        metadata={"navcuda": '{"format": "navcuda-directions", "version": 99}'},
    )
    with pytest.raises(DirectionSetError, match="version 99"):
        DirectionSet.load(future)


def test_validation():
    with pytest.raises(DirectionSetError, match="rank 2"):
        DirectionSet("convs.3", "svd", torch.ones(3), torch.ones(3), "svd", (2, 2, 3, 3))
    with pytest.raises(DirectionSetError, match="amplitudes"):
        DirectionSet("convs.3", "svd", torch.ones(3, 4), torch.ones(2), "svd", (2, 2, 3, 3))
    with pytest.raises(DirectionSetError, match="finite"):
        DirectionSet("convs.3", "svd", torch.full((1, 4), float("nan")), [1.0], "svd", (2, 2, 3, 3))
    with pytest.raises(DirectionSetError, match="do not match"):
        DirectionSet("convs.3", "weight", torch.ones(1, 2, 2, 1, 1), [1.0], "x", (2, 2, 3, 3))
    with pytest.raises(KeyError, match="no named directions"):
        DirectionSet("convs.3", "svd", torch.ones(1, 4), [1.0], "svd", (2, 2, 3, 3)).by_name("x")


def test_official_eigenvector_import(tmp_path, tiny_generator):
    w = layer_weight(tiny_generator, 3)
    eig = torch.randn(5, 1, *w.shape, generator=torch.Generator().manual_seed(0))
    eig = eig / eig.flatten(1).norm(dim=1).view(-1, 1, 1, 1, 1, 1)
    path = tmp_path / "eigenvectors_layer3_ffhq.pt"
    torch.save(eig, path)
    ds = load_official_eigenvectors(path)
    assert (ds.layer, ds.basis, len(ds)) == ("convs.3", "weight", 5)
    ds.check_compatible(tiny_generator)
    torch.testing.assert_close(ds[2].delta(tiny_generator), eig[2, 0])
    bad = tmp_path / "vectors.pt"
    torch.save(eig, bad)
    with pytest.raises(DirectionSetError, match="layer"):
        load_official_eigenvectors(bad)
    assert load_official_eigenvectors(bad, layer=3).layer == "convs.3"

"""Direction-set files: round trips, validation, fingerprint refusal, official eigenvectors."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from navcuda.discover import discover
from navcuda.io.directions import (
    DirectionSet,
    DirectionSetError,
    find_label_clash,
    load_official_eigenvectors,
)
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


def _unnamed(k=4, method="spectrum", amplitudes=None):
    coeffs = torch.eye(k, 6)
    amps = torch.full((k,), float("nan")) if amplitudes is None else amplitudes
    return DirectionSet("convs.3", "svd", coeffs, amps, method, (2, 2, 3, 3))


def test_subset_keeps_labels_and_refuses_bad_indices():
    ds = _unnamed(4)
    ds.names[2] = "smile"
    one = ds.subset([3])
    assert one[0].name == "spectrum3" and one.names == ["spectrum3"]
    assert torch.equal(one.coefficients, ds.coefficients[3:4])
    picked = ds.subset([3, 2, 0])
    assert [d.name for d in picked] == ["spectrum3", "smile", "spectrum0"]
    assert [d.name for d in ds.subset([-1])] == ["spectrum3"]
    assert picked.subset([0])[0].name == "spectrum3"  # a subset of a subset keeps the label
    with pytest.raises(DirectionSetError, match=r"index 5 is out of range.*4 directions.*0\.\.3"):
        ds.subset([1, 5])
    with pytest.raises(DirectionSetError, match=r"index -5 is out of range"):
        ds.subset([-5])
    with pytest.raises(DirectionSetError, match="index 1 listed twice"):
        ds.subset([1, 0, 1])
    with pytest.raises(DirectionSetError, match=r"index -1 \(direction 3\) listed twice"):
        ds.subset([3, -1])
    with pytest.raises(DirectionSetError, match="at least one"):
        ds.subset([])
    with pytest.raises(DirectionSetError, match="integers"):
        ds.subset([1.0])


def test_labels_stay_distinct_when_a_name_is_another_directions_default_label(tmp_path):
    """Direction 2 named "svd0" while direction 0 has no name (a file written before naming
    refused that, or names assigned in code): the set still loads, and direction 0's label steps
    aside, so subsets (``--only``) and renders never carry two directions called "svd0"."""
    ds = _unnamed(4, method="svd")
    ds.names[2] = "svd0"
    ds.names[3] = "SVD1"  # names compare case-insensitively, as by_name looks them up
    assert find_label_clash("svd", ds.names) == (2, 0)
    again = DirectionSet.load(ds.save(tmp_path / "old.nav"))  # such files keep loading
    for s in (ds, again):
        labels = [d.name for d in s]
        assert labels == ["svd0 (unnamed)", "svd1 (unnamed)", "svd0", "SVD1"]
        assert s.subset([0, 2]).names == ["svd0 (unnamed)", "svd0"]
        assert s.subset([2, 0]).subset([1])[0].name == "svd0 (unnamed)"
        assert s.by_name("svd0").meta["set_index"] == 2
    # ... and a name taking the fallback too moves it on
    ds.names[1] = "svd0 (unnamed)"
    assert ds[0].name == "svd0 (unnamed 2)"
    # A name equal to its own direction's label, or to a named direction's, is no clash; a
    # subset writes every label into its names, so it has none either.
    assert find_label_clash("svd", ["svd0", None, "svd3", "x"]) is None
    assert find_label_clash("svd", ["a", "svd0", None]) is None
    assert find_label_clash("svd", _unnamed(8, method="svd").subset([5, 0, 1]).names) is None


def test_marks_are_checked_and_follow_subsets(tmp_path):
    ds = _unnamed(4)
    ds.extra["marks"] = {"1": "good", "3": "bad"}
    ds = DirectionSet.load(ds.save(tmp_path / "marked.nav"))
    assert ds.extra["marks"] == {"1": "good", "3": "bad"}
    # A subset keeps each mark on its direction, at the direction's new index.
    assert ds.subset([3, 0, 1]).extra["marks"] == {"0": "bad", "2": "good"}
    assert ds.subset([0, 2]).extra["marks"] == {}
    assert "marks" not in _unnamed(2).subset([1]).extra
    args = ("convs.3", "svd", torch.eye(4, 6), [1.0] * 4, "x", (2, 2, 3, 3))
    for marks, found in [
        (["good"], r"found list \['good'\]"),
        ({"4": "good"}, r"found the key '4'"),
        ({"01": "good"}, r"found the key '01'"),
        ({"-1": "good"}, r"found the key '-1'"),
        ({"x": "good"}, r"found the key 'x'"),
        ({"1": "great"}, r"found 'great' for direction 1"),
        ({"1": None}, r"found None for direction 1"),
    ]:
        want = r"must map direction indices \('0'\.\.'3'\) to 'good' or 'bad', " + found
        with pytest.raises(DirectionSetError, match=r"^extra\['marks'\] " + want):
            DirectionSet(*args, extra={"marks": marks})
        # Assigned after construction: save refuses, writing nothing.
        ok = _unnamed(4)
        ok.extra["marks"] = marks
        with pytest.raises(DirectionSetError, match=r"cannot save .*m\.nav: extra\['marks'\] "):
            ok.save(tmp_path / "m.nav")
        assert not (tmp_path / "m.nav").exists()
        # In a file: the error names the file and the field.
        meta = _unnamed(4).metadata()
        meta["extra"] = {"marks": marks}
        path = _write_meta(tmp_path, "odd.nav", meta, k=4)
        with pytest.raises(
            DirectionSetError, match=r"odd\.nav: metadata field 'extra\.marks' " + want
        ):
            DirectionSet.load(path)


@pytest.mark.parametrize(
    ("amps", "bad"),
    [
        ([-5.0, 0.0], "direction 0 is -5.0"),
        ([1.0, 0.0], "direction 1 is 0.0"),
        ([float("inf"), 1.0], "direction 0 is inf"),
        ([2.0, float("-inf")], "direction 1 is -inf"),
    ],
)
def test_amplitudes_are_positive_finite_or_nan(tmp_path, amps, bad):
    from safetensors.torch import save_file

    with pytest.raises(DirectionSetError, match=rf"amplitude of {bad}: .*positive finite"):
        _unnamed(2, amplitudes=torch.tensor(amps))
    ok = _unnamed(2, amplitudes=torch.tensor([float("nan"), 0.5]))
    assert ok[0].amplitude is None and ok[1].amplitude == 0.5
    path = ok.save(tmp_path / "ok.nav")
    # A file whose amplitudes tensor was written by something else.
    meta = json.dumps(ok.metadata())
    bad_file = tmp_path / "bad_amps.nav"
    tensors = {
        "coefficients": ok.coefficients,
        "amplitudes": torch.tensor(amps, dtype=torch.float64),
    }
    save_file(tensors, bad_file, metadata={"navcuda": meta})
    with pytest.raises(DirectionSetError, match=rf"bad_amps\.nav: amplitude of {bad}"):
        DirectionSet.load(bad_file)
    # Assigned after construction: save refuses and leaves the existing file alone.
    before = path.read_bytes()
    ok.amplitudes = torch.tensor(amps, dtype=torch.float64)
    with pytest.raises(DirectionSetError, match=rf"cannot save .*ok\.nav: amplitude of {bad}"):
        ok.save(path)
    assert path.read_bytes() == before


def test_names_must_be_strings(tmp_path):
    with pytest.raises(DirectionSetError, match=r"name of direction 1 is list \[1, 2\]"):
        DirectionSet(
            "convs.3", "svd", torch.eye(2, 6), [1.0, 1.0], "x", (2, 2, 3, 3), names=["a", [1, 2]]
        )
    ds = _unnamed(2)
    ds.names[0] = [1, 2]
    with pytest.raises(DirectionSetError, match=r"cannot save .*n\.nav: name of direction 0"):
        ds.save(tmp_path / "n.nav")
    assert not (tmp_path / "n.nav").exists()


def _write_meta(tmp_path, name, meta, k=2):
    from safetensors.torch import save_file

    path = tmp_path / name
    tensors = {"coefficients": torch.eye(k, 6), "amplitudes": torch.ones(k, dtype=torch.float64)}
    save_file(tensors, path, metadata={"navcuda": json.dumps(meta)})
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra": [1]}, r"field 'extra' must be a JSON object, found list \[1\]"),
        ({"hparams": "lr=1"}, r"field 'hparams' must be a JSON object"),
        ({"layer": None}, r"field 'layer' is missing"),
        ({"method": None}, r"field 'method' is missing"),
        ({"layer": 3}, r"field 'layer' must be a string, found int 3"),
        ({"weight_shape": "abc"}, r"field 'weight_shape' must be a list of positive integers"),
        ({"weight_shape": [2, -2, 3, 3]}, r"field 'weight_shape' must be a list of positive"),
        ({"names": [[1, 2], None]}, r"field 'names' must be a list of strings"),
        ({"names": "ab"}, r"field 'names' must be a list of strings"),
        ({"seed": "7"}, r"field 'seed' must be an integer or null"),
        ({"fingerprint": 12}, r"field 'fingerprint' must be a string or null"),
    ],
)
def test_malformed_metadata_names_file_and_field(tmp_path, change, message):
    meta = _unnamed(2).metadata()
    for key, value in change.items():
        if value is None:
            del meta[key]
        else:
            meta[key] = value
    path = _write_meta(tmp_path, "odd.nav", meta)
    with pytest.raises(DirectionSetError, match=r"odd\.nav: metadata " + message):
        DirectionSet.load(path)


def test_metadata_that_is_not_an_object(tmp_path):
    path = _write_meta(tmp_path, "list.nav", ["navcuda-directions", 1])
    with pytest.raises(
        DirectionSetError, match=r"list\.nav: damaged metadata: expected a JSON obj"
    ):
        DirectionSet.load(path)


def _flip_bit_in(path, tensor: torch.Tensor) -> None:
    """Flip the lowest bit of the middle byte of ``tensor``'s data inside the file ``path``."""
    raw, data = bytearray(path.read_bytes()), tensor.contiguous().numpy().tobytes()
    at = raw.find(data)
    assert at > 0 and raw.find(data, at + 1) < 0
    raw[at + len(data) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.fixture
def fresh_notes(monkeypatch):
    """The once-per-process note about files without a checksum, afresh."""
    from navcuda.io import checksum

    monkeypatch.setattr(checksum, "_NOTED", set())


def test_a_flipped_bit_in_the_coefficients_is_refused_as_damage(tmp_path, tiny_generator):
    ds = _svd_set(tiny_generator)
    path = ds.save(tmp_path / "dirs.nav")
    _flip_bit_in(path, ds.coefficients)  # would load as a slightly different direction
    with pytest.raises(
        DirectionSetError,
        match=r"dirs\.nav' is damaged: its tensor data does not match the checksum recorded when "
        r"it was written .*; use an intact copy, or discover the directions again",
    ):
        DirectionSet.load(path)


def test_a_set_written_without_a_checksum_loads_with_a_note(tmp_path, fresh_notes):
    from navcuda.io.checksum import NoChecksumWarning

    ds = _unnamed(2)
    path = _write_meta(tmp_path, "old.nav", ds.metadata())  # as navcuda wrote it before
    with pytest.warns(NoChecksumWarning, match=r"old\.nav' records no checksum .*direction set"):
        again = DirectionSet.load(path)
    assert torch.equal(again.coefficients, torch.eye(2, 6))
    again.save(path)  # saving it again adds one
    assert json.loads(_navcuda_meta(path))["checksum"].startswith("sha256:")


def _navcuda_meta(path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()["navcuda"]


def test_a_write_failure_in_save_is_a_named_error(tmp_path, tiny_generator):
    """A write the OS refuses (here: over the file-size limit, as a full disk would) is an OSError
    naming the file, not safetensors' own error; the old file stays and no temporary is left."""
    resource = pytest.importorskip("resource")
    import signal

    ds = _svd_set(tiny_generator)
    path = ds.save(tmp_path / "dirs.nav")
    before = path.read_bytes()
    ds.names[0] = "renamed"
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, limits[1]))
        with pytest.raises(OSError, match=r"cannot write .*dirs\.nav: File too large"):
            ds.save(path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["dirs.nav"]

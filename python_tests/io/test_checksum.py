"""Tensor checksums: what they cover, the note for old files, torch.save'd checkpoints."""

from __future__ import annotations

import warnings

import pytest
import torch

from navcuda.io import checksum
from navcuda.io.checksum import (
    NoChecksumWarning,
    nested_tensors,
    state_checksum,
    tensor_checksum,
    verify_checksum,
    verify_state_checksum,
)


@pytest.fixture(autouse=True)
def _fresh_notes(monkeypatch):
    """Each test sees the once-per-process note afresh."""
    monkeypatch.setattr(checksum, "_NOTED", set())


def test_checksum_covers_name_dtype_shape_and_bytes():
    a = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    base = tensor_checksum({"a": a, "b": torch.ones(2)})
    assert base.startswith("sha256:") and len(base) == 7 + 64
    assert tensor_checksum({"b": torch.ones(2), "a": a.clone()}) == base  # order, copies
    assert tensor_checksum({"a": a.t().contiguous().t(), "b": torch.ones(2)}) == base  # strides
    bumped = a.clone()
    bumped.view(torch.int32)[1, 2] ^= 1  # one flipped bit
    changed = [
        {"a": bumped, "b": torch.ones(2)},
        {"x": a, "b": torch.ones(2)},
        {"a": a.reshape(3, 2), "b": torch.ones(2)},
        {"a": a.view(torch.int32), "b": torch.ones(2)},  # same bytes, other dtype
        {"a": a},
    ]
    for tensors in changed:
        assert tensor_checksum(tensors) != base
    assert tensor_checksum({"e": torch.zeros(0), "h": torch.ones(3, dtype=torch.bfloat16)})


def test_nested_tensors_and_state_checksum():
    state = {"G": {"w": torch.ones(2)}, "opt": {"state": {0: {"m": torch.zeros(1)}}}, "step": 3}
    assert sorted(nested_tensors(state)) == ['["G", "w"]', '["opt", "state", 0, "m"]']
    with_sum = {**state, "checksum": state_checksum(state)}
    assert state_checksum(with_sum) == state_checksum(state)  # its own entry is left out
    verify_state_checksum(with_sum, "c.pt", ValueError, "checkpoint", "retrain")
    with_sum["opt"]["state"][0]["m"][0] = 1.0
    with pytest.raises(ValueError, match=r"'c\.pt' is damaged: .*; retrain$"):
        verify_state_checksum(with_sum, "c.pt", ValueError, "checkpoint", "retrain")


def test_damaged_and_malformed_checksums_name_file_and_remedy():
    t = {"a": torch.ones(3)}
    good = tensor_checksum(t)
    verify_checksum(good, t, "x.nav", ValueError, "set", "redo")
    with pytest.raises(
        ValueError,
        match=r"'x\.nav' is damaged: its tensor data does not match the checksum recorded when "
        r"it was written \(expected sha256:.*, found sha256:.*\), so some bytes changed on disk "
        r"or in a copy; redo",
    ):
        verify_checksum(good, {"a": torch.zeros(3)}, "x.nav", ValueError, "set", "redo")
    with pytest.raises(ValueError, match=r"checksum field should be 'sha256:.*found int 12; redo"):
        verify_checksum(12, t, "x.nav", ValueError, "set", "redo")


def test_a_missing_checksum_is_noted_once_per_kind():
    t = {"a": torch.ones(3)}
    with pytest.warns(NoChecksumWarning, match=r"'old\.nav' records no checksum .*set again"):
        verify_checksum(None, t, "old.nav", ValueError, "set", "redo")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        verify_checksum(None, t, "older.nav", ValueError, "set", "redo")  # noted already
    with pytest.warns(NoChecksumWarning, match="old.pt"):
        verify_checksum(None, t, "old.pt", ValueError, "checkpoint", "redo")

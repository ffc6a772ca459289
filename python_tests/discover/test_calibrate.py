"""Amplitude calibration refuses what it cannot measure (non-finite images or targets) and
shows its progress."""

from __future__ import annotations

import io
import math
import sys

import pytest
import torch

from navcuda.discover import discover
from navcuda.discover.calibrate import calibrate_amplitudes
from navcuda.ops.shifted_modconv import SplitShift

pytestmark = pytest.mark.usefixtures("one_thread")


def _directions(g, k=3):
    ds = discover(g, "convs.3", method="svd", k=k, calibrate=False)
    ds.names = ["smile", "age", "light"][:k]
    return list(ds)


@pytest.mark.parametrize("target", [math.inf, -math.inf, math.nan, 0.0, -0.1, "0.1x"])
def test_target_must_be_positive_and_finite(tiny_generator, target):
    with pytest.raises(ValueError, match=r"target .*must be a positive finite number"):
        calibrate_amplitudes(tiny_generator, _directions(tiny_generator, 1), target=target)


def test_non_finite_unshifted_images_refused(tiny_generator):
    with torch.no_grad():
        tiny_generator.to_rgbs[-1].bias.fill_(math.nan)
    with pytest.raises(ValueError, match="non-finite .* images without any shift"):
        calibrate_amplitudes(tiny_generator, _directions(tiny_generator), iters=2)


def test_non_finite_shifted_images_name_the_direction(tiny_generator, monkeypatch):
    """A generator that renders NaN whenever the second direction is applied (as a model that
    overflows along one direction would): calibration must say so, not bisect on NaN."""
    dirs = _directions(tiny_generator)
    poisoned = dirs[1].delta(tiny_generator)
    suffix = tiny_generator.synthesis_suffix

    def synthesis_suffix(state, ws, shift=None, **kw):
        img = suffix(state, ws, shift=shift, **kw)
        if shift is not None and isinstance(shift.spec, SplitShift):
            spec = shift.spec
            hit = torch.tensor([torch.equal(spec.delta[i], poisoned) for i in spec.index.tolist()])
            img = torch.where(hit.view(-1, 1, 1, 1), torch.full_like(img, math.nan), img)
        return img

    monkeypatch.setattr(tiny_generator, "synthesis_suffix", synthesis_suffix)
    with pytest.raises(
        ValueError,
        match=r"non-finite \(NaN/Inf\) images at shift t=.* of direction 'age' \(index 1",
    ):
        calibrate_amplitudes(tiny_generator, dirs, iters=2)
    # The same generator calibrates the other directions.
    amps = calibrate_amplitudes(tiny_generator, [dirs[0], dirs[2]], iters=2)
    assert torch.isfinite(amps).all() and (amps > 0).all()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_calibration_shows_progress_on_a_terminal(tiny_generator, capsys, monkeypatch):
    """Calibration (30-80 s on the bundled model) says what it does: a bar over its renders when
    asked, or by default when stderr is a terminal; quiet otherwise (tests, logs)."""
    dirs = _directions(tiny_generator)
    calibrate_amplitudes(tiny_generator, dirs, iters=2, progress=True)
    err = capsys.readouterr().err
    assert "calibrate 3 amplitudes" in err and "3/3" in err  # 3 steps x ceil(2*3*8/64) batch
    calibrate_amplitudes(tiny_generator, dirs, iters=2)
    assert capsys.readouterr().err == ""  # not a terminal here
    calibrate_amplitudes(tiny_generator, dirs, iters=2, progress=False)
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    calibrate_amplitudes(tiny_generator, dirs, iters=2, progress=False)
    assert term.getvalue() == ""
    calibrate_amplitudes(tiny_generator, dirs, iters=2)
    assert "calibrate 3 amplitudes" in term.getvalue()

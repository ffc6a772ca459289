"""navcuda._checks: the one positive-integer check, and the modules that route theirs through it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from navcuda._checks import is_int, positive_int


def test_positive_int():
    assert positive_int(3, "k") == 3 and type(positive_int(np.int64(2), "k")) is int
    assert positive_int(None, "k", none_ok=True) is None
    assert is_int(np.int32(0)) and not is_int(True) and not is_int(2.0)
    cases = [
        (0, "k must be an integer >= 1, got 0$"),
        (-2, "k must be an integer >= 1, got -2$"),
        (True, "k must be an integer >= 1, got bool True$"),
        (2.0, r"k must be an integer >= 1, got float 2\.0$"),
        ("3", "k must be an integer >= 1, got str '3'$"),
        (None, "k must be an integer >= 1, got NoneType None$"),
        (torch.tensor(2), r"k must be an integer >= 1, got Tensor tensor\(2\)$"),
    ]
    for value, message in cases:
        with pytest.raises(ValueError, match=f"^{message}"):
            positive_int(value, "k")
    with pytest.raises(ValueError, match=r"^n must be an integer >= 1 \(steps\) or None, got 0$"):
        positive_int(0, "n", none_ok=True, note="(steps)")


def _spectrum(g, ws, value):
    # the method's own check (discover() checks its declared table first: test_params.py)
    from navcuda.discover.spectrum import discover_spectrum

    discover_spectrum(g, "convs.1", k=2, iterations=value)


def _hessian(g, ws, value):
    from navcuda.hessian import PerceptualHessian
    from navcuda.metrics.perceptual import PixelMSE

    PerceptualHessian(g, "convs.1", ws, PixelMSE(), batch_size=value)


def _hessian_resize(g, ws, value):
    from navcuda.hessian import PerceptualHessian
    from navcuda.metrics.perceptual import PixelMSE

    PerceptualHessian(g, "convs.1", ws, PixelMSE(), resize=value)


def _metric_resize(g, ws, value):
    from navcuda.metrics.perceptual import PixelMSE

    PixelMSE(resize=value)


def _train_config(g, ws, value):
    from navcuda.training import TrainConfig

    TrainConfig(r1_interval=value)


def _train_run(g, ws, value, tmp_path):
    from navcuda.training import Trainer

    Trainer.__new__(Trainer).run(steps=1, sample_every=value, sample_dir=tmp_path, progress=False)


def _toy_batches(g, ws, value):
    from navcuda.toyworld import ToyWorld

    next(ToyWorld(16).batches(value))


def _render(g, ws, value):
    from navcuda.discover import discover
    from navcuda.rendering import render_strips

    ds = discover(g, "convs.1", method="svd", k=1, calibrate=False)
    render_strips(g, list(ds), ws, [0.0], batch_size=value, progress=False)


def _frechet(g, ws, value):
    from navcuda.metrics.frechet import batched_features

    batched_features(lambda x: x.flatten(1), torch.zeros(2, 3, 4, 4), batch_size=value)


def _factor_scores(g, ws, value):
    from navcuda.metrics.factor_scores import score_image_edit

    score_image_edit(lambda idx, t: None, [0.0, 1.0], n_samples=value)


def _project(g, ws, value):
    from navcuda.project import project

    project(g, torch.zeros(3, 16, 16), steps=value, progress=False)


def _locality(g, ws, value):
    from navcuda.discover import discover
    from navcuda.evaluate.locality import locality_map

    direction = discover(g, "convs.1", method="svd", k=1, calibrate=False)[0]
    locality_map(g, direction, n_t=value, t_max=1.0)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (_spectrum, "iterations"),
        (_hessian, "batch_size"),
        (_hessian_resize, "resize"),
        (_metric_resize, "resize"),
        (_train_config, r"TrainConfig\.r1_interval"),
        (_train_run, "sample_every"),
        (_toy_batches, "batch_size"),
        (_render, "batch_size"),
        (_frechet, "batch_size"),
        (_factor_scores, "n_samples"),
        (_project, "steps"),
        (_locality, "n_t"),
    ],
)
def test_modules_refuse_what_is_not_a_positive_int(call, name, tiny_generator, tmp_path):
    """Each routed check names the argument, the value and (when it is not an int) its type;
    bools and integral floats are refused too."""
    g = tiny_generator
    ws = g.mapping(torch.randn(2, g.config.z_dim, generator=torch.Generator().manual_seed(0)))
    kw = {"tmp_path": tmp_path} if call is _train_run else {}
    for value, got in [(0, "0"), (True, "bool True"), (2.0, r"float 2\.0"), ("4", "str '4'")]:
        with pytest.raises(ValueError, match=rf"^{name} must be an integer >= 1.*, got {got}$"):
            call(g, ws.detach(), value, **kw)

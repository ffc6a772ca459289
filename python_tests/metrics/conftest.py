"""Shared fixtures of the metric tests: LPIPS metrics on random-init backbone files (the VGG ones,
``vgg_file`` and ``lpips_vgg``, are in python_tests/conftest.py: other tests use them too)."""

from __future__ import annotations

import pytest
import torch
import torchvision

from navcuda.metrics.perceptual import BACKBONE_FILES, LPIPSMetric


@pytest.fixture(scope="session")
def lpips_alex(tmp_path_factory):
    """LPIPS(alex) on a randomly initialised torchvision AlexNet backbone file."""
    torch.manual_seed(2)
    feats = torchvision.models.AlexNet().features
    sd = {f"features.{k}": v for k, v in feats.state_dict().items()}
    path = tmp_path_factory.mktemp("hub-alex") / BACKBONE_FILES["alex"]
    torch.save(sd, path)
    return LPIPSMetric("alex", backbone_path=path)

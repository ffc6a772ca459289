"""Shared fixtures of the metric tests: LPIPS metrics on random-init backbone files."""

from __future__ import annotations

import pytest
import torch
import torchvision

from navcuda.metrics.perceptual import BACKBONE_FILES, LPIPSMetric


@pytest.fixture(scope="session")
def vgg_file(tmp_path_factory):
    """A randomly initialised torchvision vgg16 state dict (features only, plus one classifier
    tensor as in the real file) saved under torchvision's checkpoint name."""
    torch.manual_seed(1)
    feats = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    sd = {f"features.{k}": v for k, v in feats.state_dict().items()}
    sd["classifier.6.bias"] = torch.zeros(1000)
    path = tmp_path_factory.mktemp("hub") / BACKBONE_FILES["vgg"]
    torch.save(sd, path)
    return path, sd


@pytest.fixture(scope="session")
def lpips_vgg(vgg_file):
    return LPIPSMetric("vgg", backbone_path=vgg_file[0])


@pytest.fixture(scope="session")
def lpips_alex(tmp_path_factory):
    """LPIPS(alex) on a randomly initialised torchvision AlexNet backbone file."""
    torch.manual_seed(2)
    feats = torchvision.models.AlexNet().features
    sd = {f"features.{k}": v for k, v in feats.state_dict().items()}
    path = tmp_path_factory.mktemp("hub-alex") / BACKBONE_FILES["alex"]
    torch.save(sd, path)
    return LPIPSMetric("alex", backbone_path=path)

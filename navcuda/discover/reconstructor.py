"""The reconstructor of the optimisation method: which direction, and how far, from an image pair.

A ResNet-18 (torchvision, trained from scratch: ``weights=None``) whose first convolution takes the
6-channel concatenation ``(G_theta(z), G_{theta + t xi_k}(z))`` and whose classifier is replaced by
two heads: logits over the K directions and the normalised shift ``t / T``.

Memory: the stem (7x7 stride-2 convolution, batch norm, ReLU, max-pool) keeps the largest
activations of the network for the backward -- two 64-channel maps at half the input size and
int64 max-pool indices (for the paper's 256 px input and batch 32: ~320 MB). With
``checkpoint_stem=True`` it keeps only its input and recomputes the rest during the backward
(``torch.utils.checkpoint``; the batch norm's running statistics are updated once, in the
forward; outputs and gradients are bitwise those without): on the bundled model's step (64 px,
batch 32) 20 MB less at the peak for 15-28 ms more of the reconstructor's ~270 ms. Off by
default: time, not memory, is what limits these runs.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["Reconstructor"]


class Reconstructor(nn.Module):
    """``(original [B, 3, H, W], shifted [B, 3, H, W]) -> (logits [B, K], t_hat [B])``.

    Both images are resized to ``size`` (antialiased bilinear) when they are another size; the
    paper uses 256 for 1024 px models.
    """

    def __init__(self, num_directions: int, size: int = 256, checkpoint_stem: bool = False) -> None:
        super().__init__()
        from torchvision.models import resnet18

        if num_directions < 2:
            raise ValueError(f"the reconstructor needs K >= 2 directions, got {num_directions}")
        net = resnet18(weights=None)
        net.conv1 = nn.Conv2d(6, 64, kernel_size=7, stride=2, padding=3, bias=False)
        features = net.fc.in_features
        net.fc = nn.Identity()
        self.backbone = net
        self.direction_head = nn.Linear(features, num_directions)
        self.shift_head = nn.Linear(features, 1)
        self.size = size
        self.checkpoint_stem = checkpoint_stem

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        net = self.backbone
        return net.maxpool(net.relu(net.bn1(net.conv1(x))))

    @contextlib.contextmanager
    def _recomputing(self):
        """The stem's recomputation in the backward: batch statistics as in the forward, but the
        running ones are not updated a second time (momentum 0 leaves them exactly as they are,
        and the batch counter is put back)."""
        bn = self.backbone.bn1
        momentum, count = bn.momentum, bn.num_batches_tracked.clone()
        bn.momentum = 0.0
        try:
            yield
        finally:
            bn.momentum = momentum
            bn.num_batches_tracked.copy_(count)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        net = self.backbone
        if self.checkpoint_stem and self.training and torch.is_grad_enabled():
            contexts = lambda: (contextlib.nullcontext(), self._recomputing())  # noqa: E731
            h = checkpoint(self._stem, x, use_reentrant=False, context_fn=contexts)
        else:
            h = self._stem(x)
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            h = layer(h)
        return torch.flatten(net.avgpool(h), 1)

    def forward(
        self, original: torch.Tensor, shifted: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if original.shape != shifted.shape or original.ndim != 4:
            raise ValueError(
                f"expected two image batches of equal shape [B, 3, H, W], got "
                f"{list(original.shape)} and {list(shifted.shape)}"
            )
        x = torch.cat([original, shifted], dim=1)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
            )
        h = self._features(x)
        return self.direction_head(h), self.shift_head(h).squeeze(1)

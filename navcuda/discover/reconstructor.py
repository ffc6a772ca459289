"""The reconstructor of the optimisation method: which direction, and how far, from an image pair.

A ResNet-18 (torchvision, trained from scratch: ``weights=None``) whose first convolution takes the
6-channel concatenation ``(G_theta(z), G_{theta + t xi_k}(z))`` and whose classifier is replaced by
two heads: logits over the K directions and the normalised shift ``t / T``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Reconstructor"]


class Reconstructor(nn.Module):
    """``(original [B, 3, H, W], shifted [B, 3, H, W]) -> (logits [B, K], t_hat [B])``.

    Both images are resized to ``size`` (antialiased bilinear) when they are another size; the
    paper uses 256 for 1024 px models.
    """

    def __init__(self, num_directions: int, size: int = 256) -> None:
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
        h = self.backbone(x)
        return self.direction_head(h), self.shift_head(h).squeeze(1)

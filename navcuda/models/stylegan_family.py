"""What navcuda's StyleGAN2 and StyleGAN3 share behind the generator interface: the latent W
(``inputs["ws"]``, ``[B, w_dim]`` or W+ ``[B, num_ws, w_dim]``), and a device and dtype read off
``w_avg``."""

from __future__ import annotations

import torch

from navcuda.models.interface import LatentSpace, ShiftableGenerator

__all__ = ["StyleGANFamily"]


class StyleGANFamily(ShiftableGenerator):
    """Mixin of StyleGAN generators (they define ``config.w_dim`` and ``w_avg``)."""

    @property
    def latent(self) -> LatentSpace:  # type: ignore[override]
        """W: ``inputs["ws"]`` (``[B, w_dim]`` or W+ ``[B, num_ws, w_dim]``)."""
        return LatentSpace("ws", self.config.w_dim, "w", standalone=True)  # type: ignore[attr-defined]

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self.w_avg.device  # type: ignore[attr-defined]

    @property
    def dtype(self) -> torch.dtype:  # type: ignore[override]
        return self.w_avg.dtype  # type: ignore[attr-defined]

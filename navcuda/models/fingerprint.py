"""A stable fingerprint of a generator's weights, so direction files know which model they fit."""

from __future__ import annotations

import hashlib

import torch

__all__ = ["model_fingerprint"]


def model_fingerprint(generator: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) over the names, shapes, dtypes and bytes of every parameter
    and persistent buffer, in name order; ``w_avg`` is left out because it is a statistic that
    loaders may recompute. The same weights give the same fingerprint on any device."""
    h = hashlib.sha256()
    for name, t in sorted(generator.state_dict().items()):
        if name == "w_avg":
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        # (flattened: a 0-dim tensor has no byte view; the bytes of others are unchanged)
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]

"""Adam whose update of each parameter can run inside the backward pass.

``loss.backward(); optimizer.step()`` holds every parameter's gradient at once: for the
optimisation method's ResNet-18 reconstructor that is 45 MB, allocated while the backward's
activations are still alive. Here each parameter has its own Adam (fused where torch has a fused
kernel for its device), driven by ``register_post_accumulate_grad_hook``: inside
:meth:`InBackwardAdam.updating`, a parameter is updated as soon as its gradient is complete and
the gradient is freed right after, while it is still in cache. The update is Adam's, parameter by
parameter, so it equals a single ``torch.optim.Adam`` over all parameters (up to the rounding of
the fused kernel); outside the context the hooks do nothing and :meth:`step` updates every
parameter that has a gradient, as usual. The state dict has the layout of one
``torch.optim.Adam`` over the same parameters, so checkpoints move between the two.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch

__all__ = ["InBackwardAdam"]


def _adam(p: torch.Tensor, lr: float) -> torch.optim.Adam:
    """A one-parameter Adam, fused where torch has the kernel for ``p``'s device and dtype."""
    try:
        return torch.optim.Adam([p], lr=lr, fused=True)
    except RuntimeError:  # no fused kernel for this device or dtype
        return torch.optim.Adam([p], lr=lr)


class InBackwardAdam:
    """Adam over ``params`` that can update each parameter during the backward pass.

    Use ``with opt.updating(): loss.backward()`` for the fused update; ``zero_grad`` and
    ``step`` behave as ``torch.optim.Adam``'s for the usual ``backward(); step()``."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("InBackwardAdam needs at least one parameter")
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError("a parameter appears twice")
        self._adams = {id(p): _adam(p, lr) for p in self.params}
        self._active = False
        for p in self.params:
            p.register_post_accumulate_grad_hook(self._hook)

    def _hook(self, p: torch.Tensor) -> None:
        if self._active:
            self._adams[id(p)].step()
            p.grad = None

    @contextlib.contextmanager
    def updating(self) -> Iterator[None]:
        """Within this context a backward pass updates every parameter it reaches and frees
        its gradient (a parameter the loss does not reach keeps its state, as with ``step``)."""
        self._active = True
        try:
            yield
        finally:
            self._active = False

    def zero_grad(self, set_to_none: bool = True) -> None:
        for adam in self._adams.values():
            adam.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        """Update every parameter that has a gradient (``torch.optim.Adam.step``)."""
        for adam in self._adams.values():
            adam.step()

    def state_dict(self) -> dict[str, Any]:
        """The state in the layout of one ``torch.optim.Adam`` over ``params`` (same order)."""
        state, group = {}, None
        for i, p in enumerate(self.params):
            sd = self._adams[id(p)].state_dict()
            if 0 in sd["state"]:
                state[i] = sd["state"][0]
            group = group or {k: v for k, v in sd["param_groups"][0].items() if k != "params"}
        return {
            "state": state,
            "param_groups": [{**group, "params": list(range(len(self.params)))}],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load :meth:`state_dict`'s layout (or a ``torch.optim.Adam``'s over the same
        parameters). The hyper-parameters are loaded; the kernel choice (fused or not) stays."""
        groups = state_dict.get("param_groups")
        if not isinstance(groups, list) or len(groups) != 1:
            raise ValueError("expected the state of one Adam with a single parameter group")
        ids = groups[0]["params"]
        if len(ids) != len(self.params):
            raise ValueError(
                f"the saved optimiser has {len(ids)} parameters, this one {len(self.params)}"
            )
        kernel_keys = ("fused", "foreach", "capturable", "differentiable")
        hyper = {k: v for k, v in groups[0].items() if k not in ("params", *kernel_keys)}
        for pid, p in zip(ids, self.params, strict=True):
            adam = self._adams[id(p)]
            own = adam.param_groups[0]
            group = {**hyper, **{k: own[k] for k in kernel_keys if k in own}, "params": [0]}
            saved = state_dict["state"].get(pid)
            if saved is not None and saved["exp_avg"].shape != p.shape:
                raise ValueError(
                    f"saved Adam state {list(saved['exp_avg'].shape)} does not fit a parameter "
                    f"of shape {list(p.shape)}"
                )
            adam.load_state_dict(
                {"state": {} if saved is None else {0: saved}, "param_groups": [group]}
            )

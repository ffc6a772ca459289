"""Can a latent shift reproduce a parameter-space edit? (paper §4.3, eq. 5, Fig. 8)

For an edit ``G_theta -> G_{theta + t xi}``, find ONE shift ``h`` shared by all latents, in one of
the spaces ``"z"``, ``"w"``, ``"w+"`` or ``"activations"`` (the input of the edited layer), that
minimises ``E_z || G_theta(z + h) - G_{theta + t xi}(z) ||^2`` (eq. 5; any image metric can replace
the squared error). The answer is reported on held-out latents as the *relative residual*
``E||G(z + h) - G'(z)||^2 / E||G(z) - G'(z)||^2``: 0 means the latent shift reproduces the edit
exactly, 1 means it does no better than not editing at all. An edit is called *unreachable* from a
space when the relative residual stays above ``threshold`` (default 0.5: the best latent shift
cannot remove even half of the edit's squared change).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from tqdm.auto import tqdm

from navcuda.grad_mode import differentiates
from navcuda.models.interface import (
    GeneratorError,
    Inputs,
    ShiftableGenerator,
    SplitState,
    frozen,
)
from navcuda.shift import Direction, synthesize_shifted

__all__ = [
    "ReproductionResult",
    "SPACES",
    "plot_reproduction",
    "reproduce_edit",
    "spaces_for",
]

Space = Literal["z", "w", "w+", "activations"]
SPACES: tuple[str, ...] = ("z", "w", "w+", "activations")
Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ReproductionResult:
    """Outcome of :func:`reproduce_edit` on held-out latents."""

    space: str
    relative_residual: float
    residual: float
    edit_energy: float
    unreachable: bool
    threshold: float
    history: list[float] = field(default_factory=list)


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).square().flatten(1).mean(dim=1)


@differentiates
def reproduce_edit(
    generator: ShiftableGenerator,
    direction: Direction,
    t: float,
    space: Space = "w",
    n_z: int = 32,
    n_eval: int = 32,
    steps: int = 200,
    lr: float = 0.05,
    batch_size: int = 16,
    metric: Metric | None = None,
    threshold: float = 0.5,
    seed: int = 0,
    truncation_psi: float = 1.0,
    progress: bool = False,
    label: int | None = None,
) -> ReproductionResult:
    """Optimise a shared latent shift imitating the edit; see the module docstring.

    ``"w"`` is the generator's latent (:attr:`~ShiftableGenerator.latent`), ``"z"`` and ``"w+"``
    need a StyleGAN generator (a mapping from z, several W vectors), ``"activations"`` a generator
    that caches the input of the edited layer (StyleGAN2); others are refused with a
    :class:`~navcuda.models.interface.GeneratorError`. ``label``: a conditional generator's class
    (None: drawn with the latents), the same for the target and the imitation."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    if direction.basis == "latent" and space == "activations":
        raise ValueError("a latent direction has no edited layer: use space z, w or w+")
    _check_space(generator, space)
    metric = metric or _mse
    dev = generator.device
    gen = torch.Generator().manual_seed(seed)
    n = n_z + n_eval
    if space == "z":  # the latents themselves, and a conditional generator's labels
        z = torch.randn(n, generator.config.z_dim, generator=gen).to(dev)
        labels = (
            generator.sample(n, seed, label=label).get("label") if generator.num_classes else None
        )
        rows = Inputs({"z": z, "label": labels})
    else:
        rows = generator.sample(n, seed, truncation_psi=truncation_psi, label=label)
    layer = None if direction.basis == "latent" else direction.layer
    with frozen(generator):
        with torch.no_grad():
            targets = torch.cat(
                [
                    synthesize_shifted(
                        generator, _inputs(generator, space, c, truncation_psi), direction, t
                    )  # fmt: skip
                    for c in rows.chunks(batch_size)
                ]
            )
        h = _init_shift(generator, space, layer, rows.take(slice(0, 1)), truncation_psi)
        opt = torch.optim.Adam([h], lr=lr)
        history = []
        bar = tqdm(range(steps), disable=not progress, desc=f"reproduce in {space}")
        for step in bar:
            idx = torch.randint(n_z, (min(batch_size, n_z),), generator=gen).to(dev)
            out = _render(generator, space, layer, rows.take(idx), h, truncation_psi)
            loss = metric(out, targets[idx]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append(loss.item())
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.4g}")
        with torch.no_grad():
            res, energy = 0.0, 0.0
            held_out = rows.take(slice(n_z, None))
            for c, tgt in zip(held_out.chunks(batch_size), targets[n_z:].split(batch_size),
                              strict=True):  # fmt: skip
                res += float(
                    metric(_render(generator, space, layer, c, h, truncation_psi), tgt).sum()
                )
                base = _render(generator, space, layer, c, torch.zeros_like(h), truncation_psi)
                energy += float(metric(base, tgt).sum())
    res, energy = res / n_eval, energy / n_eval
    rel = res / energy if energy > 0 else float("nan")
    return ReproductionResult(space, rel, res, energy, bool(rel > threshold), threshold, history)


def _needs(generator: ShiftableGenerator) -> dict[str, tuple[bool, str]]:
    """Per space: whether ``generator`` offers it, and what it needs."""
    stylegan = callable(getattr(generator, "from_z", None)) and hasattr(generator, "num_ws")
    return {
        "z": (stylegan, "a mapping from z (StyleGAN)"),
        "w": (generator.latent is not None, "a latent space"),
        "w+": (stylegan, "several W vectors (StyleGAN)"),
        "activations": (generator.caches_prefix, "cached activations before the layer"),
    }


def spaces_for(generator: ShiftableGenerator, direction: Direction) -> list[str]:
    """The spaces :func:`reproduce_edit` can search for ``direction`` on ``generator``."""
    offered = [s for s, (ok, _) in _needs(generator).items() if ok]
    return [s for s in offered if not (direction.basis == "latent" and s == "activations")]


def _check_space(generator: ShiftableGenerator, space: str) -> None:
    ok, what = _needs(generator)[space]
    if not ok:
        raise GeneratorError(
            f"space {space!r} needs {what}, which {generator.architecture} does not expose"
        )


def _inputs(generator, space: str, rows: Inputs, psi, h: torch.Tensor | None = None) -> Inputs:
    """The generator's inputs of ``rows``: as they are, or (space ``"z"``) their z, shifted by
    ``h``, mapped with their labels."""
    if space != "z":
        return rows
    z = rows["z"] if h is None else rows["z"] + h
    return generator.from_z(z, psi, label=rows.get("label"))


def _init_shift(generator, space, layer, first, psi) -> torch.Tensor:
    if space == "z":
        shape: tuple[int, ...] = (generator.config.z_dim,)
    elif space == "w":
        shape = (generator.latent.dim,)
    elif space == "w+":
        shape = (generator.num_ws, generator.latent.dim)
    else:
        with torch.no_grad():
            x = generator.split(_inputs(generator, space, first, psi), layer).cache["x"]
        shape = tuple(x.shape[1:])
    return torch.zeros(shape, device=generator.device, requires_grad=True)


def _render(generator, space, layer, rows, h, psi) -> torch.Tensor:
    if space == "z":
        return generator.render(_inputs(generator, space, rows, psi, h))
    if space == "w":
        return generator.render(generator.latent.shift(rows, h.expand(len(rows), -1)))
    if space == "w+":
        key = generator.latent.key
        return generator.render(rows.replace(**{key: rows[key].unsqueeze(1) + h}))
    state = generator.split(rows, layer)
    cache = state.cache.replace(x=state.cache["x"] + h)
    return generator.resume(SplitState(state.layer, state.inputs, cache))


def plot_reproduction(
    rows: Sequence[dict], path: str | os.PathLike, threshold: float = 0.5, title: str = ""
) -> Path:
    """Grouped bars of the relative residual per direction (groups) and latent space (bars),
    with the ``threshold`` above which an edit counts as unreachable; saved atomically as PNG.

    ``rows``: dicts with ``direction``, ``space`` and ``relative_residual`` (what ``navcuda
    evaluate reproduce`` writes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from navcuda.rendering import atomic_save_figure

    if not rows:
        raise ValueError("plot_reproduction: no rows to plot")
    names = list(dict.fromkeys(str(r["direction"]) for r in rows))
    spaces = list(dict.fromkeys(str(r["space"]) for r in rows))
    value = {(str(r["direction"]), str(r["space"])): float(r["relative_residual"]) for r in rows}
    width = 0.8 / len(spaces)
    fig, ax = plt.subplots(figsize=(max(6.4, 0.6 * len(names) * len(spaces)), 4.2), dpi=120)
    for j, space in enumerate(spaces):
        xs = [i + (j - (len(spaces) - 1) / 2) * width for i in range(len(names))]
        ys = [value.get((n, space), float("nan")) for n in names]
        ax.bar(xs, ys, width, label=space)
    ax.axhline(threshold, color="k", ls="--", lw=1, label=f"unreachable above {threshold:g}")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("relative residual (1 = no better than no edit)")
    ax.set_title(title or "best latent shift vs the parameter-space edit")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return atomic_save_figure(fig, path)

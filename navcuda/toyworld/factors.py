"""Ground-truth factors of variation of the toy world.

Every toy-world image is a deterministic function of a vector of ``NUM_FACTORS``
continuous factors.  The renderer consumes *normalised* factors, each a float in
``[0, 1]``; this module is the single source of truth for how a normalised value
maps to a natural quantity (a length, an angle) and for what each factor means.

Geometry conventions (used by :mod:`navcuda.toyworld.render`):

* Lengths are in *normalised image units*: the image spans ``[-1, 1]`` on both
  axes, so a length of ``1.0`` is half the image side, whatever the resolution.
  ``x`` points right and ``y`` points *down* (row order).
* Hues are in degrees on the HSV colour wheel.  No hue range wraps around the
  wheel (all are shorter than 360 degrees), so each factor changes the colour
  monotonically and two distinct values never give the same colour.
* A normalised value ``v`` maps linearly to ``low + v * (high - low)``.

Prior: each factor is independent and uniform on ``[0, 1]`` (i.e. uniform over
its natural range); :func:`sample_factors` draws from this prior.

The table is frozen: changing a range changes every rendered image, so treat
the values as part of the data set's definition.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

__all__ = [
    "FACTORS",
    "FACTOR_NAMES",
    "FACTOR_INDEX",
    "NUM_FACTORS",
    "PRIOR",
    "Factor",
    "describe_factors",
    "sample_factors",
    "to_natural",
]

PRIOR = "independent uniform on [0, 1] for every normalised factor"


@dataclass(frozen=True)
class Factor:
    """One ground-truth factor of variation.

    Attributes:
        name: identifier, also the key used in :data:`FACTOR_INDEX`.
        description: what the factor changes in the picture, and in which
            direction as the normalised value goes from 0 to 1.
        low: natural value at normalised value 0.
        high: natural value at normalised value 1.
        unit: unit of ``low``/``high``.
    """

    name: str
    description: str
    low: float
    high: float
    unit: str

    def to_natural(self, value: float) -> float:
        """Map a normalised value in ``[0, 1]`` to the natural unit (linear)."""
        return self.low + value * (self.high - self.low)


_LEN = "image half-widths"

FACTORS: tuple[Factor, ...] = (
    Factor(
        "head_width",
        "Half-width of the head ellipse; 0 = narrow face, 1 = wide face. "
        "The hair outline follows the head.",
        0.48,
        0.68,
        _LEN,
    ),
    Factor(
        "head_height",
        "Half-height of the head ellipse with the top of the head fixed; "
        "0 = short face (high chin), 1 = long face (low chin).",
        0.60,
        0.76,
        _LEN,
    ),
    Factor(
        "skin_hue",
        "Hue of the skin (and of the nose, a darker skin shade); 0 = pinkish, 1 = yellowish.",
        5.0,
        45.0,
        "degrees",
    ),
    Factor(
        "eye_spacing",
        "Horizontal distance from the face's midline to each eye centre; "
        "0 = close-set eyes, 1 = wide-set eyes. The brows follow the eyes.",
        0.17,
        0.28,
        _LEN,
    ),
    Factor(
        "eye_size",
        "Horizontal radius of each eye white (the vertical radius is 1.1x); "
        "the pupil scales with the eye. 0 = small eyes, 1 = big eyes.",
        0.09,
        0.15,
        _LEN,
    ),
    Factor(
        "gaze_x",
        "Horizontal pupil offset as a fraction of its largest in-eye offset; "
        "0 = looking to the image's left, 0.5 = centred, 1 = image's right.",
        -1.0,
        1.0,
        "fraction of max offset",
    ),
    Factor(
        "brow_height",
        "Height of the brow bars above the eye line (distance from the eye "
        "centre line up to the brow centre line); 0 = low brows, 1 = raised.",
        0.22,
        0.34,
        _LEN,
    ),
    Factor(
        "nose_length",
        "Length of the nose capsule's core segment, which hangs down from just "
        "below the eye line; 0 = short nose, 1 = long nose.",
        0.06,
        0.24,
        _LEN,
    ),
    Factor(
        "mouth_width",
        "Half-width of the mouth arc; 0 = narrow mouth, 1 = wide mouth.",
        0.12,
        0.28,
        _LEN,
    ),
    Factor(
        "mouth_curvature",
        "Vertical drop of the mouth's centre below its corners, relative to "
        "the mouth's half-width (negative = centre above the corners); "
        "0 = frown, 0.5 = straight, 1 = smile.",
        -0.55,
        0.55,
        "sag / mouth half-width",
    ),
    Factor(
        "hair_hue",
        "Hue of the hair (saturated, fairly dark); 0 = red, through yellow, "
        "green, cyan and blue, 1 = magenta.",
        0.0,
        300.0,
        "degrees",
    ),
    Factor(
        "hair_length",
        "Height of the straight lower edge of the hair at the sides of the "
        "head; 0 = short hair (above the eyes), 1 = long hair (near the chin).",
        -0.15,
        0.70,
        "image y coordinate (down)",
    ),
    Factor(
        "fringe_length",
        "How far the fringe (hair over the forehead) reaches down from the top "
        "of the head; 0 = short fringe, 1 = long fringe.",
        0.04,
        0.15,
        _LEN,
    ),
    Factor(
        "background_hue",
        "Hue of the (pastel, vertically shaded) background; 0 = red, through "
        "yellow, green, cyan and blue, 1 = magenta.",
        0.0,
        300.0,
        "degrees",
    ),
)

FACTOR_NAMES: tuple[str, ...] = tuple(f.name for f in FACTORS)
NUM_FACTORS: int = len(FACTORS)
FACTOR_INDEX: dict[str, int] = {name: i for i, name in enumerate(FACTOR_NAMES)}


def to_natural(factors: Tensor) -> Tensor:
    """Map normalised factors to natural units.

    Args:
        factors: ``[..., NUM_FACTORS]`` floating tensor, nominally in ``[0, 1]``.

    Returns:
        Tensor of the same shape, dtype and device; column ``i`` is
        ``FACTORS[i].low + factors[..., i] * (FACTORS[i].high - FACTORS[i].low)``.
    """
    if factors.shape[-1] != NUM_FACTORS:
        raise ValueError(f"expected last dimension {NUM_FACTORS}, got shape {tuple(factors.shape)}")
    low = torch.tensor([f.low for f in FACTORS], dtype=factors.dtype, device=factors.device)
    high = torch.tensor([f.high for f in FACTORS], dtype=factors.dtype, device=factors.device)
    return low + factors * (high - low)


def sample_factors(
    n: int,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> Tensor:
    """Draw ``n`` factor vectors from the prior (independent uniform on [0, 1]).

    Args:
        n: number of samples, ``>= 0``.
        generator: CPU ``torch.Generator`` to draw from (its state advances).
        seed: alternatively, an integer seed; a fresh generator seeded with it is
            used, so the same seed always gives the same samples.  Passing both
            ``generator`` and ``seed`` is an error.  With neither, torch's global
            RNG is used.

    Returns:
        ``[n, NUM_FACTORS]`` float32 CPU tensor with values in ``[0, 1)``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if generator is not None and seed is not None:
        raise ValueError("pass either generator or seed, not both")
    if seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    return torch.rand(n, NUM_FACTORS, generator=generator, dtype=torch.float32)


def describe_factors() -> list[dict]:
    """Describe every factor, in column order.

    Returns:
        A list of ``NUM_FACTORS`` dicts with keys ``index`` (int), ``name``,
        ``description``, ``unit`` (str), ``low``, ``high`` (float, natural values
        at normalised 0 and 1) and ``prior`` (str).
    """
    return [{"index": i, **asdict(f), "prior": "uniform on [0, 1]"} for i, f in enumerate(FACTORS)]

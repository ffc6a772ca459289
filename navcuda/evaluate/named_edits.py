"""Is a named edit clean at a given strength? The check behind the bundled named set.

A direction named after a toy-world factor (``navcuda name --auto``) is *clean at strength t*
(``t`` a multiple of its recommended amplitude, as ``navcuda edit --t`` takes it) when, on the
generator's samples, shifting by ``t x amplitude``:

- moves its factor by at least :data:`MIN_CHANGE` of the factor's range, in the direction of
  ``t`` (named directions are oriented so that positive ``t`` increases their factor);
- moves every other factor by at most :data:`MAX_CROSSTALK` of that change;
- raises toy-FD (against world renders) by at most :data:`MAX_FD_INCREASE`.

A factor's *change* is the mean over samples of ``f(G_{theta + t a xi}(z)) - f(G_theta(z))``,
read by the factor regressor (:mod:`navcuda.metrics.factor_regressor`, unclamped predictions;
a factor's range is 1). Other factors are also reported as the mean *absolute* change
(``abs_change``): a factor that goes up on some faces and down on others averages out in the
signed mean, and is visible all the same.

:func:`clean_strength` scans the absolute shift ``s`` of a direction and returns the one where
the check passes with the largest worst-case margin. :func:`build_clean_named_set` makes the
bundled named set: per factor, the combination of a layer's directions that moves that factor
alone (:func:`fit_factor_shift`), given the amplitude ``s / t`` so that the example strength ``t``
is its clean shift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from navcuda.toyworld import FACTOR_NAMES

__all__ = [
    "MAX_CROSSTALK",
    "MAX_FD_INCREASE",
    "MIN_CHANGE",
    "EditCheck",
    "EditProbe",
    "build_clean_named_set",
    "check_named_set",
    "clean_strength",
    "factor_jacobian",
    "fit_factor_shift",
    "oriented",
]

#: The named factor's mean change at the example strength, in units of its range, at least.
MIN_CHANGE = 0.1
#: Every other factor's mean change, as a fraction of the named factor's change, at most.
MAX_CROSSTALK = 1.0 / 3.0
#: Toy-FD increase over the unedited samples, at most.
MAX_FD_INCREASE = 0.5


def factor_index(name: str) -> int:
    """The toy-world factor a direction is named after (``"eye size"`` -> ``eye_size``)."""
    key = name.strip().lower().replace(" ", "_")
    if key not in FACTOR_NAMES:
        raise ValueError(f"{name!r} is not a toy-world factor (one of {', '.join(FACTOR_NAMES)})")
    return FACTOR_NAMES.index(key)


@dataclass
class EditCheck:
    """One direction checked at one shift (see the module docstring).

    Attributes:
        name: the direction's name; ``factor``: the factor it is named after.
        t: the strength (multiple of the amplitude); ``shift``: the absolute shift ``t x amp``.
        change: mean change of every factor ``[14]`` (signed).
        abs_change: mean absolute change of every factor ``[14]``.
        change_se: standard error of ``change`` over the samples ``[14]``.
        target_change: ``change`` of the named factor (signed; clean edits have the sign of t).
        crosstalk: largest other factor's mean change over ``|target_change|``;
            ``worst_other``: that factor.
        abs_crosstalk: the same with mean absolute changes of the other factors.
        fd_increase: toy-FD of the edited samples minus that of the unedited ones (None when
            not measured).
        n_samples: samples averaged over.
    """

    name: str
    factor: str
    t: float
    shift: float
    change: torch.Tensor
    abs_change: torch.Tensor
    change_se: torch.Tensor
    target_change: float
    crosstalk: float
    worst_other: str
    abs_crosstalk: float
    fd_increase: float | None
    n_samples: int
    meta: dict = field(default_factory=dict)

    @property
    def failures(self) -> list[str]:
        """What fails the check (empty when it passes)."""
        out = []
        signed = self.target_change * math.copysign(1.0, self.t)
        if signed < MIN_CHANGE:
            out.append(f"{self.factor} moves {signed:+.3f} (< {MIN_CHANGE:g})")
        if self.crosstalk > MAX_CROSSTALK:
            out.append(f"{self.worst_other} moves {self.crosstalk:.2f} of it (> 1/3)")
        if self.fd_increase is not None and self.fd_increase > MAX_FD_INCREASE:
            out.append(f"toy-FD +{self.fd_increase:.2f} (> {MAX_FD_INCREASE:g})")
        return out

    @property
    def passes(self) -> bool:
        return not self.failures

    @property
    def margin(self) -> float:
        """The worst of the three criteria as a ratio to its bound (> 1: passes with room)."""
        signed = self.target_change * math.copysign(1.0, self.t)
        ratios = [signed / MIN_CHANGE, MAX_CROSSTALK / max(self.crosstalk, 1e-9)]
        if self.fd_increase is not None:
            ratios.append(MAX_FD_INCREASE / max(self.fd_increase, 1e-9))
        return min(ratios)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "factor": self.factor,
            "t": self.t,
            "shift": self.shift,
            "target_change": self.target_change,
            "crosstalk": self.crosstalk,
            "worst_other": self.worst_other,
            "abs_crosstalk": self.abs_crosstalk,
            "fd_increase": self.fd_increase,
            "passes": self.passes,
            "failures": self.failures,
            "change": {n: float(v) for n, v in zip(FACTOR_NAMES, self.change, strict=True)},
            "n_samples": self.n_samples,
        }


class EditProbe:
    """Fixed samples of a generator, their unedited factor predictions and toy-FD, reused for
    every direction and shift checked.

    ``n_samples`` latents drawn with ``seed`` at ``truncation_psi``; toy-FD against
    ``realism_samples`` world renders (0: no toy-FD). ``regressor``: default the bundled one.
    """

    @torch.no_grad()
    def __init__(
        self,
        generator,
        n_samples: int = 64,
        seed: int = 0,
        truncation_psi: float = 1.0,
        realism_samples: int = 512,
        regressor=None,
        batch_size: int = 64,
        noise_mode: str = "const",
    ) -> None:
        from navcuda.metrics.factor_regressor import load_factor_regressor
        from navcuda.metrics.frechet import world_statistics

        self.generator = generator
        self.regressor = regressor if regressor is not None else load_factor_regressor()
        self.batch_size = batch_size
        self.noise_mode = noise_mode
        self.inputs = generator.sample(n_samples, seed, truncation_psi=truncation_psi)
        self.n_samples = n_samples
        self.stats = (
            world_statistics(realism_samples, seed, self.regressor) if realism_samples else None
        )
        self.base_pred, base_feats = self._read(None, 0.0)
        self.fd0 = self._fd(base_feats) if self.stats is not None else None

    def _read(self, direction, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
        from navcuda.shift import synthesize_shifted

        dev = next(self.regressor.parameters()).device
        preds, feats = [], []
        for chunk in self.inputs.chunks(self.batch_size):
            n = len(chunk)
            dirs = None if direction is None else [direction] * n
            img = synthesize_shifted(
                self.generator, chunk, dirs, torch.full((n,), float(shift)), self.noise_mode
            )
            f = self.regressor.features(img.to(dev))
            feats.append(f.double().cpu())
            preds.append(self.regressor.head(f).double().cpu())
        return torch.cat(preds), torch.cat(feats)

    def _fd(self, feats: torch.Tensor) -> float:
        from navcuda.metrics.frechet import feature_statistics, frechet_distance

        return float(frechet_distance(*feature_statistics(feats), *self.stats))

    @torch.no_grad()
    def check(self, direction, t: float, factor: str | None = None, amplitude=None) -> EditCheck:
        """Check ``direction`` at strength ``t`` (a multiple of ``amplitude``, default the
        direction's own) against the factor it is named after (or ``factor``)."""
        amp = float(direction.amplitude if amplitude is None else amplitude)
        if not math.isfinite(amp) or amp <= 0:
            raise ValueError(f"direction {direction.name!r} has no amplitude to scale t by")
        k = factor_index(factor or direction.name or "")
        pred, feats = self._read(direction, t * amp)
        delta = pred - self.base_pred
        change, abs_change = delta.mean(0), delta.abs().mean(0)
        target = float(change[k])
        others = [i for i in range(len(FACTOR_NAMES)) if i != k]
        o = torch.tensor(others)
        worst = others[int(change[o].abs().argmax())]
        denom = max(abs(target), 1e-12)
        return EditCheck(
            name=direction.name or "",
            factor=FACTOR_NAMES[k],
            t=float(t),
            shift=t * amp,
            change=change,
            abs_change=abs_change,
            change_se=delta.std(0) / math.sqrt(delta.shape[0]),
            target_change=target,
            crosstalk=float(change[worst].abs()) / denom,
            worst_other=FACTOR_NAMES[worst],
            abs_crosstalk=float(abs_change[o].max()) / denom,
            fd_increase=None if self.stats is None else self._fd(feats) - self.fd0,
            n_samples=self.n_samples,
        )


def check_named_set(probe: EditProbe, directions, ts: Sequence[float] = (-2.0, 2.0)) -> list:
    """Every named direction of ``directions`` checked at every strength of ``ts``."""
    return [probe.check(d, t) for d in directions for t in ts]


def oriented(direction, sign: float):
    """``direction`` itself (``sign > 0``) or its opposite (same name and amplitude)."""
    if sign > 0:
        return direction
    from dataclasses import replace

    return replace(direction, coefficients=-direction.coefficients)


def clean_strength(
    probe: EditProbe, direction, shifts: Sequence[float], factor: str | None = None
) -> tuple[float | None, float, list[tuple[EditCheck, EditCheck]]]:
    """The absolute shift ``s`` among ``shifts`` (> 0) at which ``direction`` passes at both
    ``+s`` and ``-s`` with the largest worst-case margin (None if it passes at none), the sign
    that orients it (+1, or -1 when it decreases the factor: use ``oriented(direction, -1)``),
    and the ``(minus, plus)`` checks of the oriented direction at every shift."""
    rows = []
    for s in shifts:
        rows.append(
            (probe.check(direction, -1.0, factor, s), probe.check(direction, 1.0, factor, s))
        )
    slope = sum(p.target_change - m.target_change for m, p in rows)
    sign = 1.0 if slope >= 0 else -1.0
    if sign < 0:  # the opposite direction: its checks are these, mirrored
        rows = [(_flip(p), _flip(m)) for m, p in rows]
    best, best_margin = None, 0.0
    for s, pair in zip(shifts, rows, strict=True):
        margin = min(c.margin for c in pair)
        if all(c.passes for c in pair) and margin > best_margin:
            best, best_margin = float(s), margin
    return best, sign, rows


def _flip(check: EditCheck) -> EditCheck:
    from dataclasses import replace

    return replace(check, t=-check.t, shift=-check.shift)


#: Shifts scanned by :func:`build_clean_named_set`, as multiples of each fitted shift.
SCAN = (0.7, 1.0, 1.4, 2.0, 2.8)
#: The worst bound's margin a shipped direction needs at build time (1: exactly at a bound), so
#: that it stays clean on other latents: on the bundled model a "head height" built at margin
#: 1.02 on 256 latents moved mouth curvature 0.36 of itself on 96 others.
MIN_MARGIN = 1.2


def _unit_basis(generator, candidates) -> tuple[str, torch.Tensor]:
    """The candidates' directions as unit vectors ``[K, ...]``: their coefficients when every set
    is in the SVD basis (combinations stay compact) or every set is latent (a fit in W, the
    latent baselines' counterpart), else weight shifts."""
    bases = {ds.basis for ds in candidates}
    if bases in ({"svd"}, {"latent"}):
        c = torch.cat([ds.coefficients.double() for ds in candidates])
        return bases.pop(), c / c.norm(dim=1, keepdim=True)
    return "weight", torch.stack(
        [d.delta(generator).double().cpu() for ds in candidates for d in ds]
    )


def _odd_change(probe: EditProbe, direction) -> torch.Tensor:
    """``(change(+a) - change(-a)) / 2`` of every factor at ``direction``'s amplitude ``a`` (the
    factor passed to ``check`` only labels the result: the raw changes are read)."""
    plus = probe.check(direction, 1.0, FACTOR_NAMES[0]).change
    return (plus - probe.check(direction, -1.0, FACTOR_NAMES[0]).change) / 2


def factor_jacobian(probe: EditProbe, layer: str, basis: str, vectors, steps) -> torch.Tensor:
    """``[n_factors, K]``: every factor's mean change per unit shift along each unit vector of
    ``vectors`` (central differences at ``+-steps[k]``, read on ``probe``'s samples)."""
    from navcuda.shift import Direction

    cols = []
    for v, h in zip(vectors, steps, strict=True):
        cols.append(_odd_change(probe, Direction(layer, basis, v, amplitude=float(h))) / float(h))
    return torch.stack(cols, dim=1)


def fit_factor_shift(
    probe: EditProbe,
    jacobian: torch.Tensor,
    vectors,
    layer: str,
    basis: str,
    factor: int,
    change: float,
    refine: int = 3,
) -> torch.Tensor:
    """The combination ``c`` of ``vectors`` whose shift ``sum_k c_k v_k`` moves factor ``factor``
    by ``+-change`` at ``+-`` the shift and no other factor, at first order: the least-norm
    solution of ``J c = change e_factor`` (``J``: ``jacobian``), then ``refine`` Newton steps on
    the odd part ``(change(+) - change(-)) / 2`` measured on ``probe`` at the shift itself (the
    even part, the same at both signs, no direction can cancel). Returns the shift ``[...]``."""
    from navcuda.shift import Direction

    pinv = torch.linalg.pinv(jacobian)
    e = torch.zeros(jacobian.shape[0], dtype=torch.float64)
    e[factor] = change
    c = pinv @ e
    vecs = torch.as_tensor(vectors, dtype=torch.float64)
    for _ in range(refine):
        shift = torch.tensordot(c, vecs, dims=1)
        odd = _odd_change(probe, Direction(layer, basis, shift, amplitude=float(shift.norm())))
        c = c + pinv @ (e - odd)
    return torch.tensordot(c, vecs, dims=1)


@torch.no_grad()
def build_clean_named_set(
    generator,
    candidates,
    t: float = 2.0,
    n_samples: int = 256,
    jacobian_samples: int = 64,
    realism_samples: int = 512,
    seed: int = 0,
    change: float = 0.14,
    refine: int = 3,
    factors: Sequence[str] | None = None,
    scan: Sequence[float] = SCAN,
    min_margin: float = MIN_MARGIN,
    progress: bool = True,
):
    """The named set of ``generator``: per factor, the combination of the candidate directions
    that moves that factor alone, kept where it is clean at strength ``t``.

    ``candidates``: direction sets of one layer (any methods; e.g. the layer's whole SVD
    basis). Their span is searched, not only its members: every factor's mean change per unit
    shift along each candidate is measured on ``jacobian_samples`` latents (seed ``seed + 2``;
    :func:`factor_jacobian`), and per factor the least-norm combination that moves it by
    ``change`` (of its range) and no other factor is solved for and refined on ``n_samples``
    latents (seed ``seed``; :func:`fit_factor_shift`). Its shift is then scanned over ``scan x``
    itself with toy-FD on ``realism_samples`` world renders (:func:`clean_strength`); a factor
    is kept, named and given the amplitude ``strength / t`` when some scanned shift is clean at
    both signs with a margin of at least ``min_margin`` (the shift with the largest margin).
    ``factors``: those to fit (default every toy-world factor). Returns ``(DirectionSet, report
    dict)``; the set is in the SVD (latent) basis when every candidate is.
    """
    from tqdm.auto import tqdm

    from navcuda.io.directions import DirectionSet
    from navcuda.shift import Direction

    layers = {ds.layer for ds in candidates}
    if len(layers) != 1:
        raise ValueError(f"candidates must share one layer, got {sorted(layers)}")
    layer = layers.pop()
    names = (
        list(FACTOR_NAMES) if factors is None else [FACTOR_NAMES[factor_index(f)] for f in factors]
    )
    if not 0 < change < 1:
        raise ValueError(f"change must lie in (0, 1) of a factor's range, got {change!r}")
    steps = [0.2 * float(a) for ds in candidates for a in ds.amplitudes]
    if not all(math.isfinite(h) and h > 0 for h in steps):
        raise ValueError(
            "every candidate needs a recommended amplitude (the Jacobian's step is 0.2 x it): "
            "discover them with calibration (navcuda discover does), or set them with "
            "navcuda.discover.calibrate.calibrate_amplitudes"
        )
    basis, vectors = _unit_basis(generator, candidates)
    jp = EditProbe(generator, jacobian_samples, seed + 2, realism_samples=0)
    cols = []
    for k in tqdm(range(0, len(vectors), 8), desc="jacobian", disable=not progress):
        cols.append(factor_jacobian(jp, layer, basis, vectors[k : k + 8], steps[k : k + 8]))
    jac = torch.cat(cols, dim=1)
    fit = EditProbe(generator, n_samples, seed, realism_samples=0)
    probe = EditProbe(generator, n_samples, seed, realism_samples=realism_samples)
    report = {
        "t": t,
        "n_samples": n_samples,
        "fd_unedited": probe.fd0,
        "jacobian_singular_values": torch.linalg.svdvals(jac).tolist(),
        "factors": {},
    }
    chosen = []
    for name in tqdm(names, desc="fit", disable=not progress):
        f = FACTOR_NAMES.index(name)
        shift = fit_factor_shift(fit, jac, vectors, layer, basis, f, change, refine)
        norm = float(shift.norm())
        d = Direction(layer, basis, shift / norm, name=name.replace("_", " "), amplitude=norm)
        shifts = [x * norm for x in scan]
        s, sign, rows = clean_strength(probe, d, shifts, name)
        scanned = [[x, m.to_dict(), p.to_dict()] for x, (m, p) in zip(shifts, rows, strict=True)]
        report["factors"][name] = {"fitted_shift": norm, "clean_shift": s, "scan": scanned}
        if s is not None:
            pair = rows[shifts.index(s)]
            margin = min(c.margin for c in pair)
            report["factors"][name]["margin"] = margin
            if margin >= min_margin:
                chosen.append((name, oriented(d, sign), s, margin, pair))
    if not chosen:
        raise ValueError("no factor has a clean combination of the candidates at any scanned shift")
    ref = candidates[0]
    out = DirectionSet(
        layer=layer,
        basis=basis,
        coefficients=torch.stack([d.coefficients.float() for _, d, *_ in chosen]),
        amplitudes=torch.tensor([s / t for _, _, s, _, _ in chosen], dtype=torch.float64),
        method="+".join(sorted({ds.method for ds in candidates})) + "+fit",
        weight_shape=tuple(ref.weight_shape),
        names=[f.replace("_", " ") for f, *_ in chosen],
        fingerprint=generator.fingerprint(),
        model=getattr(generator, "architecture", None),
        hparams={"example_t": t, "n_samples": n_samples, "change": change, "refine": refine},
        seed=seed,
        metric=ref.metric,
        extra={
            "named_by": "toy-world factor regressor",
            "fit": "per factor, the least-norm combination of the candidates moving it alone; "
            "amplitude: clean shift / example_t",
            "clean_checks": [
                {
                    "name": f.replace("_", " "),
                    "shift": s,
                    "margin": mg,
                    "minus": pair[0].to_dict(),
                    "plus": pair[1].to_dict(),
                }
                for f, _, s, mg, pair in chosen
            ],  # fmt: skip
        },
    )
    return out, report


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m navcuda.evaluate.named_edits check [FILE]`` (``--checkpoint FILE``: another
    toy-world generator than the bundled one). Building a set: ``navcuda name --fit``."""
    import argparse

    import navcuda
    from navcuda.io.directions import DirectionSet
    from navcuda.models.default import load_default_directions

    ap = argparse.ArgumentParser(prog="python -m navcuda.evaluate.named_edits")
    sub = ap.add_subparsers(dest="cmd", required=True)
    chk = sub.add_parser("check", help="check a named set of the bundled model at +-t")
    chk.add_argument("file", nargs="?", help="named set (default: the bundled one)")
    chk.add_argument("--t", type=float, default=2.0, help="example strength")
    chk.add_argument("--n-samples", type=int, default=256)
    chk.add_argument("--realism-samples", type=int, default=512)
    chk.add_argument("--seed", type=int, default=0)
    chk.add_argument("--checkpoint", help="generator file (default: the bundled model)")
    args = ap.parse_args(argv)
    if args.checkpoint:
        g = navcuda.load_generator(args.checkpoint).eval()
    else:
        g = navcuda.load_default()
    ds = DirectionSet.load(args.file) if args.file else load_default_directions()
    probe = EditProbe(g, args.n_samples, args.seed, realism_samples=args.realism_samples)
    bad = 0
    for c in check_named_set(probe, ds, (-args.t, args.t)):
        bad += not c.passes
        print(
            f"{c.name:16s} t={c.t:+g}: {c.factor} {c.target_change:+.3f}, worst other "
            f"{c.worst_other} {c.crosstalk:.2f} of it, toy-FD {c.fd_increase:+.2f}  "
            + ("ok" if c.passes else "FAIL: " + "; ".join(c.failures))
        )
    print(f"{len(ds) * 2 - bad} of {len(ds) * 2} checks pass (n = {args.n_samples})")
    return int(bad > 0)


if __name__ == "__main__":
    raise SystemExit(_main())

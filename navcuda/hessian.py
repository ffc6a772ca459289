"""Hessian-vector products of the perceptual change induced by shifting one conv layer's kernel.

For a generator ``G`` (any :class:`~navcuda.models.interface.ShiftableGenerator`), one shiftable
layer with effective kernel ``W [out, in, k, k]``, fixed inputs ``z`` (``n`` of them: latents plus
conditioning, the same in both renders) and a metric ``d`` (:mod:`navcuda.metrics.perceptual`)::

    L(delta) = (1/n) sum_z d( R(G_theta(z)), R(G_{theta + delta}(z)) )

where ``delta`` is added to the effective kernel of that layer (StyleGAN: the raw kernel, before
the equalized-lr scale, the modulation and the demodulation, as in the official code) and ``R`` is
the resize to ``resize x resize`` (the official spectrum code: ``F.interpolate(img, size=64)``,
i.e. *nearest*; ``resize_mode`` changes it). This is the paper's ``E_z d^2(G_theta(z),
G_{theta+alpha}(z))`` of section 3.3: LPIPS is itself a squared distance, and the official code
uses ``lpips(...).mean()``.

:class:`PerceptualHessian` precomputes ONCE the activations before the layer (the generator's
``split``, where it caches them), the unshifted images and their metric features, and offers

- :meth:`~PerceptualHessian.grad` -- ``g(delta) = dL/d delta``;
- :meth:`~PerceptualHessian.hvp_fd` -- the paper's central difference for a block of ``m``
  vectors, all ``2m`` perturbations in one batched pass (per-sample shifts);
- :meth:`~PerceptualHessian.hvp_gn` -- the exact Gauss-Newton product (see below);
- :meth:`~PerceptualHessian.hvp_reference` -- the official sequential method (one vector at a
  time, full synthesis every time), the reference of benchmarks;
- :meth:`~PerceptualHessian.explicit_hessian` -- the whole matrix for tiny layers (tests).

Finite differences and normalisation
------------------------------------
The paper's update (eq. 4) and the official ``HVP_forward.forward_step`` compute, for a
(not necessarily unit) vector ``v``::

    (g(eps v) - g(-eps v)) / (2 eps ||v||)      ~=  H v / ||v||  =  H v_hat

(perturbations of Frobenius norm ``eps ||v||``; the error is ``O(eps^2 ||v||^2)``, from the third
derivative of ``L``). ``hvp_fd`` and ``hvp_reference`` return ``(g(eps v) - g(-eps v)) / (2 eps)
~= H v`` by default, a linear operator comparable with ``hvp_gn``; with ``normalize=True`` they
return exactly the paper's formula (divided by ``||v||`` as well). Either way the perturbation is
``eps * v`` as in the paper, so its size scales with ``||v||``: pass unit vectors to make ``eps``
the step length.

Gauss-Newton = Hessian at zero shift
------------------------------------
All metrics of :mod:`navcuda.metrics.perceptual` have the form ``d(a, b) = q(phi(a) - phi(b))``
with ``phi`` the (normalised, resized) features and ``q(e) = e^T A e`` a PSD quadratic form
(LPIPS: ``A`` diagonal with ``w_{l,c} / (H_l W_l)``, the calibrated channel weights over the
spatial size). Let ``F_z(delta) = phi(R(G_{theta+delta}(z)))``, ``J_z = dF_z/d delta`` at 0, and
``r_z(delta) = F_z(delta) - F_z(0)`` (the residual). Then::

    L        = (1/n) sum_z q(r_z)
    grad L   = (1/n) sum_z J_z^T (2 A r_z)
    Hess L   = (1/n) sum_z [ J_z^T 2A J_z  +  sum_i (2 A r_z)_i  Hess(F_z,i) ]

At ``delta = 0`` every residual ``r_z`` is zero, so the second term vanishes and the Hessian IS the
Gauss-Newton matrix ``(1/n) sum_z J_z^T 2A J_z`` -- exactly, not approximately. Its product with
``v`` is one Jacobian-vector product ``u_z = J_z v`` (forward mode through the generator tail, the
resize and the metric's features), the metric's own gradient ``grad q(u_z) = 2 A u_z`` (``q`` is
quadratic, so this is ``Hess q  u_z``; computed by autograd on the small feature tensors, so any
quadratic ``q`` works, not only diagonal ones) and one vector-Jacobian product ``J_z^T (2 A u_z)``
(one backward pass). It is also PSD by construction. For a metric that is not of this form
(``metric.is_quadratic`` False) ``hvp_gn`` falls back to ``hvp_fd`` with a warning.

Computing ``J v``: three modes, tried in this order by ``mode="auto"``.

- ``"linearized"`` (the fast one, StyleGAN2: the generator's ``linearize``):
  :mod:`navcuda.models.linearize` runs the unshifted synthesis
  from the layer on ONCE per chunk of latents, keeping the leaky-ReLU slopes, then pushes the
  tangents of a block of vectors through the layers after it as a fixed linear map (one
  modulated convolution per layer and vector/latent pair, channels-last, the primal shared by
  all vectors, no tangent kept for the backward); the metric's image-space product
  ``J_phi^T 2A J_phi u`` comes from its linearisation at the unshifted images
  (``metric.linearize``, :mod:`navcuda.metrics.linearize`: every bundled metric records its
  network once per image and pushes the tangents of all vectors through the linear map that
  leaves; other metrics use forward-mode AD per sample, in groups of 3/4 of a chunk), and one
  backward pass from ``J v`` returns ``J^T 2A J v`` for every vector of the block. Per product
  that is about one forward and one backward pass of the layers after the shifted one, against
  two of each for a central difference.
- ``"forward"``: ``torch.autograd.forward_ad`` (the engine under ``torch.func.jvp``) through the
  whole suffix with the plain-torch pieces, the primal recomputed for every (vector, latent)
  pair. This is the exact Gauss-Newton product of every generator without a linearisation
  (wrapped torch modules, StyleGAN3): one forward pass carries primal and tangent, so the
  primal's graph serves the backward ``J^T (2A J v)`` directly (``torch.func.jvp`` followed by
  ``torch.func.vjp`` would run the forward twice).
- ``"double-backward"``: ``J v = d/du <J^T u, v>`` (``J^T u`` built with ``create_graph=True``
  from a zero ``u``; exact, needs ops that support double backward, as ``bias_act`` does).

``torch.func.jvp`` is not used: through a native custom op registered with a backward only it
silently returns zero tangents (checked with torch 2.14), and ``vmap`` over it, which would share
the primal, measured 2.4x slower per product than the batched finite differences on the CPU. If no
mode works the FD product is used, with a warning.

Batching: every product works on *samples* = (vector or perturbation, latent) pairs, run through
the generator's ``resume`` in chunks of ``batch_size`` samples. A chunk holds few distinct
vectors/perturbations, each used by many latents: the shift is a split shift
(:meth:`LayerShift.split <navcuda.models.interface.LayerShift.split>`) of a leaf holding one tensor
per vector/perturbation of the chunk, with ``t = 1`` and the per-sample index, which the generator
runs as one base convolution plus one convolution per distinct vector (no per-sample kernel is
materialised, and the weight gradient of each vector is one dense reduction), so ONE backward pass
per chunk returns every perturbation's gradient already summed over its latents. The shift part
``conv(x, delta)`` is computed apart from ``conv(x, W)``, so a small ``eps`` is not lost in the
rounding of ``W + eps v``.

Memory: what grows with the latents is the cache of each (the activations before the layer,
its inputs and, for FD products and gradients, the unshifted features, computed on first use).
Under ``memory_budget`` (:mod:`navcuda.hessian_memory`) the first latents that fit are cached
and the others recomputed per block of ``batch_size`` latents in every product, so that peak
memory is flat in the number of latents past the budget. The first Gauss-Newton product's check
(two loss evaluations) keeps no autograd graph: it used to keep one per latent (~70 MB each on
a 512-channel 32 px model with LPIPS-VGG), the main growth of peak memory with the latents.

The "forward" and "double-backward" Gauss-Newton modes and :meth:`~PerceptualHessian.loss` run
the generator with the plain-torch pieces (its ``reference_ops()``): the native fused kernels
support first-order reverse mode only, and these need double backward or forward-mode AD. The
"linearized" mode needs neither through the generator (its tangent pass is an ordinary forward
computation, differentiated once), so it runs the native kernels.

Where this lives: ``navcuda/hessian.py``, not ``navcuda/ops/``: it composes the generator
(``split``/``resume``) and a metric, and ``ops`` must not import upward (the package
layering). It goes through the public ``LayerShift`` API, so faster shifted-conv kernels in
``ops`` speed it up without changes; fused HVP kernels, if ever written, would be ops that this
module dispatches to.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

from navcuda._checks import positive_int
from navcuda.grad_mode import differentiates, refuse_inference_mode
from navcuda.hessian_memory import HessianMemory, plan_latents
from navcuda.memory_budget import measure_peak, parse_size
from navcuda.models.interface import (
    Inputs,
    LayerShift,
    ShiftableGenerator,
    SplitState,
    frozen,
)

__all__ = ["GN_MODES", "PerceptualHessian"]

#: Ways of computing the Jacobian-vector product of :meth:`PerceptualHessian.hvp_gn`.
GN_MODES = ("auto", "linearized", "forward", "double-backward")

_RESIZE_MODES = ("nearest", "bilinear", "bicubic", "area")


#: Loss (about a just visible LPIPS change is 1e-2) at the step of the first product's check
#: against the second difference of the loss (:meth:`PerceptualHessian._check_quadratic_form`).
_CHECK_LOSS = 1e-4


def _metric_group(batch_size: int) -> int:
    """Samples per metric pass of the linearized Gauss-Newton product when the metric has no
    shared-primal linearisation (forward-mode AD): 3/4 of a chunk.

    The metric's tangent graph (per-sample activations of its feature network, primal and
    tangent) lives for one group, on top of what the generator's tangents of the whole chunk
    keep; each group pays a fixed cost (~6 ms for the toy regressor, whose primal is recomputed
    per sample). Measured on the bundled model with the toy-regressor metric (2-core CPU): the
    graph holds ~1.8 MB per 64 px sample, the generator tangent pass's transients ~1.4 MB, so
    groups of ~3/4 of a chunk keep the metric phase near the generator pass's peak: at batch 8
    groups of 4 / 6 / 8 peaked at 16.2 / 18.1 / 22.4 MB (1.92 / 1.84 / 1.76 s for 16 x 16
    products); at batch 32 larger groups are faster at the same peak (the generator's)."""
    return max(1, 3 * batch_size // 4)


def _fastest(fns, device: torch.device, repeats: int = 2) -> list[float]:
    """The fastest of ``repeats`` timed calls of each of ``fns``, in seconds (synchronised on
    CUDA). The calls take turns (a, b, a, b), so that a busy spell as long as two calls slows at
    most one run of each: the probe's vectors' part is the difference of two such timings, which
    magnifies a slowed side (two fresh processes printed 1.04 and 1.73 s per product where
    1.45 s was measured and seven later ones 1.30-1.40 s; the calls were not interleaved then)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda *_: None
    best = [math.inf] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def _rows_bytes(state: SplitState) -> int:
    """Bytes per latent of a state's inputs and cache."""
    tensors = list(state.inputs.tensors.values())
    if state.cache is not None:
        tensors += list(state.cache.tensors.values())
    total = sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
    return -(-total // max(1, len(state)))


@dataclass
class _Window:
    """Latents ``[lo, hi)`` of a product's pass: their split state (cached or just recomputed)
    and, once a chunk asks for them, their unshifted features."""

    lo: int
    hi: int
    state: SplitState
    resident: bool
    feats: list[torch.Tensor] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.hi - self.lo


class PerceptualHessian:
    """Gradients and Hessian-vector products of ``L(delta)`` (see the module docstring).

    Args:
        generator: any :class:`~navcuda.models.interface.ShiftableGenerator` (not modified; its
            parameters get no gradients: the FD and GN products run with them frozen,
            ``requires_grad`` False, restored afterwards, so that the layers keep for the backward
            only what the shift's gradient needs; :meth:`hvp_reference` leaves them as they are).
            Generators that cache the work before the layer (:meth:`split`) run only the tail;
            others render from the inputs every time.
        layer: a shiftable layer (index or name, e.g. ``3`` or ``"convs.3"``).
        inputs: the latents, as :class:`~navcuda.models.interface.Inputs`
            (``generator.sample(n, seed)``: latents plus conditioning, held fixed between the
            unshifted and the shifted renders), or for StyleGAN ``ws [n, w_dim]`` / W+
            ``[n, num_ws, w_dim]`` (``n`` = number of z; cast to the generator's dtype/device).
        metric: a :class:`~navcuda.metrics.perceptual.PerceptualMetric` (or anything with
            ``features``, ``distance_from_features``, ``quadratic``, ``is_quadratic``) on the
            generator's device and dtype.
        batch_size: samples per chunk (a sample = one latent under one shift); bounds memory.
        noise_mode: StyleGAN's noise: ``"const"`` (default) or ``"none"``; ``"random"`` is
            refused (the two sides of a finite difference would see different noise).
        resize: images are resized to ``resize x resize`` before the metric (``None``: no resize).
            Default 64 as in the official spectrum recipe.
        resize_mode: interpolation of that resize; default ``"nearest"`` (the official code calls
            ``F.interpolate`` with its default mode).
        progress: show tqdm progress bars over chunks.
        setup_progress: a bar over the precomputation in the constructor (the activations
            before the layer of every cached latent); default ``progress``.
        memory_budget: bytes (or ``"24GB"``, ``"50%"`` of the free memory:
            :func:`navcuda.memory_budget.parse_size`) for the per-latent caches, one chunk's
            transient and that chunk's vectors, on the generator's device. ``None`` (default):
            every latent cached. With a budget the constructor measures one chunk of
            ``budget_product`` on one latent (:attr:`memory`, :class:`~navcuda.hessian_memory.
            HessianMemory`), caches the first latents that fit and recomputes the others per
            block of ``batch_size`` latents in every product, so that peak memory stops growing
            with the latents; results differ only by float rounding (the chunks' sums are
            grouped differently). Raises :class:`~navcuda.memory_budget.MemoryBudgetError`
            with the figures when one chunk does not fit. A caller running products of more
            than ``batch_size`` vectors reserves their rows (``memory.per_vector`` each) apart.
        budget_product: the product the budget is planned for: ``"gn"`` (:meth:`hvp_gn`, the
            default) or ``"fd"`` (:meth:`hvp_fd` and :meth:`grad`, which also keep the unshifted
            features of the cached latents).

    The unshifted features (FD products and gradients only) are computed on first use.
    """

    def __init__(
        self,
        generator: ShiftableGenerator,
        layer: int | str,
        inputs: Inputs | torch.Tensor,
        metric,
        *,
        batch_size: int = 32,
        noise_mode: str = "const",
        resize: int | None = 64,
        resize_mode: str = "nearest",
        progress: bool = False,
        setup_progress: bool | None = None,
        memory_budget: int | str | None = None,
        budget_product: str = "gn",
    ) -> None:
        if not isinstance(generator, ShiftableGenerator):
            raise TypeError(
                "generator must be a navcuda generator (navcuda.load_generator, load_default or "
                f"navcuda.wrap(module, sample=...)), got {type(generator).__name__}"
            )
        info = generator.layer(layer)
        if not info.shiftable:
            raise ValueError(
                f"layer {info.name!r} ({info.role or info.kind}) cannot be shifted; pick one of "
                + ", ".join(i.name for i in generator.layers() if i.shiftable)
            )
        for attr in ("features", "distance_from_features"):
            if not callable(getattr(metric, attr, None)):
                raise TypeError(
                    f"metric must provide .{attr}() (a navcuda.metrics.perceptual metric), got "
                    f"{type(metric).__name__}"
                )
        positive_int(batch_size, "batch_size")
        if noise_mode not in ("const", "none"):
            raise ValueError(
                f"noise_mode must be 'const' or 'none', got {noise_mode!r} (with random noise the "
                "shifted and unshifted renders, and the two sides of a finite difference, would "
                "see different noise)"
            )
        positive_int(resize, "resize", none_ok=True)
        if resize_mode not in _RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {_RESIZE_MODES}, got {resize_mode!r}")
        if budget_product not in ("gn", "fd"):
            raise ValueError(f"budget_product must be 'gn' or 'fd', got {budget_product!r}")
        # Its cached activations would be inference tensors, unusable by every product.
        refuse_inference_mode("PerceptualHessian")

        self.generator = generator
        self.info = info
        self.layer = info.name
        self.shape = tuple(info.weight_shape)
        self.n_params = math.prod(self.shape)
        self.dtype = generator.dtype
        self.device = generator.device
        self.metric = metric
        self.batch_size = int(batch_size)
        self.noise_mode = noise_mode
        self.resize = None if resize is None else int(resize)
        self.resize_mode = resize_mode
        self.progress = progress
        self.gn_mode_used: str | None = None
        budget = None if memory_budget is None else parse_size(memory_budget, self.device)

        self.inputs = self._check_inputs(inputs)
        self.n = len(self.inputs)
        # The unshifted features are kept for the cached latents when FD products are planned
        # for (or with no budget); otherwise each block recomputes them when it needs them.
        self._keep_features = budget is None or budget_product == "fd"
        self._feats_cache: list[torch.Tensor] | None = None
        self._probe_latents: int | None = None  # products over the first latents only (probe)
        self._window = 0  # latents per streamed block (0: every latent is cached)

        # ---- the shift-independent part, computed once: the activations before the layer
        show = progress if setup_progress is None else setup_progress
        from tqdm.auto import tqdm

        desc = f"hessian setup: activations of {self.n} latents"
        with tqdm(total=self.n, desc=desc, unit="z", disable=not show) as bar:
            first = min(self.n, self.batch_size)
            with torch.no_grad():
                st = generator.split(self.inputs.take(slice(0, first)), info.name)
            bar.update(first)
            self._state, self._resident = st, first
            self.memory = self._plan(budget, budget_product, _rows_bytes(st))
            self._resident, self._window = self.memory.resident, self.memory.window
            if self._resident < self.n:
                bar.set_description(
                    f"hessian setup: activations of {self._resident} cached latents (of {self.n})"
                )
                bar.total = max(first, self._resident)
            self._feats_cache = None  # rebuilt on first use for the planned latents
            self._state = self._cache_states(st, bar)

    def _plan(self, budget: int | None, product: str, per_prefix: int) -> HessianMemory:
        """The memory model; with a budget, one chunk of ``product`` is measured on the first
        latent, then :func:`~navcuda.hessian_memory.plan_latents` decides what is cached."""
        row = self.n_params * torch.finfo(self.dtype).bits // 8
        per_feats = 0
        if budget is not None and self._keep_features:
            per_feats = sum(f[:1].nbytes for f in self._resident_features())
        per_chunk = seconds = primal = None
        if product == "gn":
            vectors, latents = self._gn_layout(self.batch_size)
        else:
            vectors, latents = max(1, self.batch_size // 2), 1
        if budget is not None:
            per_chunk, seconds, primal = self._probe(product, vectors, latents)
        resident, window = plan_latents(
            self.n,
            self.batch_size,
            per_prefix + per_feats,
            (per_chunk or 0) + vectors * row,
            budget,
        )
        return HessianMemory(
            n_latents=self.n,
            batch_size=self.batch_size,
            per_latent_prefix=per_prefix,
            per_latent_features=per_feats,
            per_vector=2 * row,
            per_chunk=per_chunk,
            chunk_vectors=vectors,
            chunk_latents=latents,
            chunk_seconds=seconds,
            primal_seconds=primal,
            budget=budget,
            resident=resident,
            window=window,
            product=product,
        )

    def _probe(self, product: str, vectors: int, latents: int) -> tuple[int, float, float]:
        """Peak bytes and seconds of one chunk of ``product`` (``vectors`` unit vectors on the
        first ``latents`` latents), and the seconds of its shared primal: after a warm-up on one
        vector and one latent (lazy initialisation; for ``"gn"`` the choice of its mode,
        :meth:`hvp_gn`), the chunk is timed, for ``"gn"`` also with twice the vectors (the
        latents' primal runs once for both, so the difference is the vectors' own part), then
        run again under the peak's tracker (which slows it several times over). Each timing is
        the faster of two runs, the two timings taking turns (:func:`_fastest`): a busy
        neighbour only ever adds time, and one slowed run made the primal/vector split (a
        difference of two timings) print several times the real cost."""
        gen = torch.Generator().manual_seed(0)
        v = torch.randn(2 * vectors, *self.shape, generator=gen, dtype=torch.float64)
        v = v / v.flatten(1).norm(dim=1).view(-1, *[1] * len(self.shape))
        v = v.to(self.device, self.dtype)
        fn = self.hvp_gn if product == "gn" else self.hvp_fd
        self._probe_latents = 1
        try:
            fn(v[:1])
            self._probe_latents = latents

            def one():
                return fn(v[:vectors])

            if product == "gn":  # 2x the vectors, the latents' primal once for both
                seconds, both = _fastest([one, lambda: fn(v)], self.device)
                primal = min(seconds, max(0.0, 2 * seconds - both))
            else:
                (seconds,), primal = _fastest([one], self.device), 0.0
            _, peak, _ = measure_peak(one, self.device)
        finally:
            self._probe_latents = None
        return peak, seconds, primal

    def _cache_states(self, first: SplitState, bar) -> SplitState:
        """The states of the cached latents ``[0, resident)``, ``first`` (the first chunk's)
        reused; ``bar`` counts them."""
        if self._resident <= len(first):
            return first.take(slice(0, self._resident)) if self._resident < len(first) else first
        states = [first]
        with torch.no_grad():
            for lo in range(len(first), self._resident, self.batch_size):
                hi = min(lo + self.batch_size, self._resident)
                states.append(self.generator.split(self.inputs.take(slice(lo, hi)), self.layer))
                bar.update(hi - lo)
        caches = [st.cache for st in states]
        cache = None if caches[0] is None else Inputs.cat(caches)  # type: ignore[arg-type]
        return SplitState(self.layer, self.inputs.take(slice(0, self._resident)), cache)

    def _check_inputs(self, inputs: Inputs | torch.Tensor) -> Inputs:
        """The latents as inputs on the generator's device and dtype, with the noise mode set
        (StyleGAN); finite and non-empty."""
        if isinstance(inputs, torch.Tensor):
            if inputs.ndim not in (2, 3) or inputs.shape[0] < 1:
                raise ValueError(
                    "ws must be a tensor [n, w_dim] or [n, num_ws, w_dim] with n >= 1, got "
                    f"{list(inputs.shape)}"
                )
            inputs = self.generator.from_latents(inputs.detach())
        elif not isinstance(inputs, Inputs):
            raise ValueError(
                "inputs must be navcuda Inputs (generator.sample(n, seed)) or, for StyleGAN, a "
                f"tensor ws [n, w_dim]; got {type(inputs).__name__}"
            )
        inputs = inputs.detach().to(self.device, self.dtype)
        for name, t in inputs.tensors.items():
            if t is not None and t.is_floating_point() and not torch.isfinite(t).all():
                raise ValueError(f"{'ws' if name == 'ws' else name} contains NaN or inf")
        if "noise_mode" in inputs.options or self.generator.architecture.startswith("stylegan"):
            inputs = inputs.with_options(noise_mode=self.noise_mode)
        return inputs

    # ================================================================ helpers
    def describe(self) -> dict:
        """A JSON-able record of the setup (store it with eigenvectors)."""
        md = self.metric.describe() if callable(getattr(self.metric, "describe", None)) else {}
        return {
            "layer": self.layer,
            "weight_shape": list(self.shape),
            "n_latents": self.n,
            "noise_mode": self.noise_mode,
            "resize": self.resize,
            "resize_mode": self.resize_mode,
            "loss": "mean_z d(G(z), G_shifted(z))",
            "metric": md,
            "memory": self.memory.to_dict(),
        }

    def _spans(self) -> list[tuple[int, int, bool]]:
        """The latent blocks of a product's pass: ``(lo, hi, cached)``; the cached latents are
        one block, the others blocks of ``window`` latents (during the probe: the first latent
        only)."""
        n = self.n if self._probe_latents is None else min(self.n, self._probe_latents)
        r = min(self._resident, n)
        spans = [(0, r, True)] if r else []
        step = self._window or n
        spans += [(lo, min(lo + step, n), False) for lo in range(r, n, step)]
        return spans

    def _windows(self) -> Iterator[_Window]:
        """The blocks of :meth:`_spans` with their states, recomputed for the streamed ones."""
        for lo, hi, cached in self._spans():
            if cached:
                st = self._state if hi == len(self._state) else self._state.take(slice(lo, hi))
            else:
                with torch.no_grad():
                    st = self.generator.split(self.inputs.take(slice(lo, hi)), self.layer)
            yield _Window(lo, hi, st, cached)

    def _unshifted_features(self, state: SplitState) -> list[torch.Tensor]:
        """The metric's features of the unshifted renders of ``state``'s latents, in chunks."""
        feats = []
        with torch.no_grad():
            for lo in range(0, len(state), self.batch_size):
                out = self.generator.resume(state.take(slice(lo, lo + self.batch_size)))
                feats.append([f.detach() for f in self.metric.features(self._resize(out))])
        return [torch.cat(fl) for fl in zip(*feats, strict=True)]

    def _resident_features(self) -> list[torch.Tensor]:
        """The unshifted features of the cached latents, computed on first use; kept when FD
        products were planned for (``budget_product="fd"``) or there is no budget."""
        if self._feats_cache is not None:
            return self._feats_cache
        feats = self._unshifted_features(self._state)
        if self._keep_features:
            self._feats_cache = feats
        return feats

    @property
    def _feats0(self) -> list[torch.Tensor]:
        return self._resident_features()

    def _window_features(self, win: _Window) -> list[torch.Tensor]:
        """The unshifted features of a block's latents (computed once per block)."""
        if win.feats is None:
            if win.resident and self._keep_features:
                feats = self._resident_features()
                win.feats = [f[win.lo : win.hi] for f in feats] if win.hi < len(feats[0]) else feats
            else:
                win.feats = self._unshifted_features(win.state)
        return win.feats

    def _resize(self, img: torch.Tensor) -> torch.Tensor:
        if self.resize is None or tuple(img.shape[2:]) == (self.resize, self.resize):
            return img
        kw = {} if self.resize_mode in ("nearest", "area") else {"align_corners": False}
        return F.interpolate(img, size=(self.resize, self.resize), mode=self.resize_mode, **kw)

    def _features(
        self,
        state: SplitState,
        idx: torch.Tensor,
        one_latent: bool,
        deltas: torch.Tensor | None,
        index: torch.Tensor | None = None,
        t: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Metric features of the renders of ``state``'s latents ``idx`` with the layer shifted by
        ``t[s] * deltas[index[s]]`` for sample ``s`` (``deltas [P, *shape]``; ``index`` None: all
        zeros, i.e. one shared shift; ``t`` None: all ones; ``deltas`` None: unshifted).
        ``one_latent``: :meth:`_one_latent` of ``idx``, evaluated once per chunk by the
        caller: the chunk's inputs are then broadcast views of that latent's, so that the shifted
        layer convolves its input once."""
        shift = None
        if deltas is not None:
            if index is None:
                index = torch.zeros(len(idx), dtype=torch.int64, device=self.device)
            if t is None:
                t = torch.ones(len(idx), dtype=self.dtype, device=self.device)
            shift = LayerShift.split(self.layer, deltas, t, index)
        img = self.generator.resume(state.take(idx, one_latent), shift)
        return list(self.metric.features(self._resize(img)))

    @staticmethod
    def _one_latent(idx: torch.Tensor) -> bool:
        """Whether ``idx`` is one latent several times (every index the same). A host
        synchronisation on a GPU: evaluated once per chunk, and passed to every :meth:`_rows` of
        the chunk (its inputs and unshifted features)."""
        return idx.numel() > 1 and bool((idx == idx[0]).all())

    @staticmethod
    def _rows(t: torch.Tensor, idx: torch.Tensor, one_latent: bool) -> torch.Tensor:
        """``t[idx]``; with ``one_latent`` (:meth:`_one_latent` of ``idx``) a broadcast view
        (batch stride 0)."""
        if one_latent:
            return t[idx[:1]].expand(idx.numel(), *t.shape[1:])
        return t[idx]

    def _bar(self, total: int, desc: str):
        """A bar over one product's chunks (with ``progress``): left off the screen when done,
        redrawn at most once a second (a long run's log keeps a line per second at most)."""
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="chunk", leave=False, mininterval=1.0,
                    disable=not self.progress)  # fmt: skip

    def _chunks(
        self, count: int, desc: str, per_item: int = 1
    ) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor, _Window]]:
        """Chunks of the ``count x n`` (vector/perturbation ``p``, latent ``i``) items, block of
        latents by block (:meth:`_windows`): yields ``(p_lo, p_hi, p_local, i, window)`` with
        ``p_local = p - p_lo`` and ``i`` the latents' indices in ``window``. Each item is
        ``per_item`` samples (the caller's), so a chunk holds ``batch_size // per_item`` items
        (at least one).

        With ``count >= batch_size`` a chunk is one latent under a run of ``p`` (a latent's runs
        split evenly): every sample shares the shifted layer's input, convolved once with the
        chunk's directions stacked (``shares_input``), and the styles of every later layer.
        Otherwise the samples of a block run ``p``-major (``s = p * n + i``): a chunk is a few
        directions, each convolved once over many latents."""
        bs = max(1, self.batch_size // per_item)

        def n_chunks(n: int) -> int:
            return n * -(-count // bs) if count >= bs else -(-count * n // bs)

        total = sum(n_chunks(hi - lo) for lo, hi, _ in self._spans())
        with self._bar(total, desc) as bar:
            for win in self._windows():
                for item in self._block_chunks(count, bs, len(win)):
                    yield (*item, win)
                    bar.update()

    def _block_chunks(
        self, count: int, bs: int, n: int
    ) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
        """:meth:`_chunks` within one block of ``n`` latents."""
        if count >= bs:
            parts = -(-count // bs)
            cuts = [round(k * count / parts) for k in range(parts + 1)]
            for i in range(n):
                for k in range(parts):
                    p_local = torch.arange(cuts[k + 1] - cuts[k], device=self.device)
                    yield cuts[k], cuts[k + 1], p_local, torch.full_like(p_local, i)
            return
        total = count * n
        for lo in range(0, total, bs):
            s = torch.arange(lo, min(lo + bs, total), device=self.device)
            p, i = s // n, s % n
            p_lo, p_hi = int(p[0]), int(p[-1]) + 1
            yield p_lo, p_hi, p - p_lo, i

    def _check_block(self, v: torch.Tensor, what: str = "V") -> tuple[torch.Tensor, bool]:
        """``[m, *shape]`` (or one ``[*shape]``) -> (``[m, *shape]`` on device/dtype, single)."""
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{what} must be a tensor, got {type(v).__name__}")
        single = v.ndim == 4
        if single:
            v = v.unsqueeze(0)
        if v.ndim != 5 or tuple(v.shape[1:]) != self.shape or v.shape[0] < 1:
            raise ValueError(
                f"{what} must be [m, {', '.join(map(str, self.shape))}] (or one "
                f"{list(self.shape)}) for layer {self.layer!r}, got {list(v.shape)}"
            )
        if not v.is_floating_point():
            raise TypeError(f"{what} must be a floating tensor, got {v.dtype}")
        v = v.detach().to(device=self.device, dtype=self.dtype)
        if not torch.isfinite(v).all():
            raise ValueError(f"{what} contains NaN or inf")
        return v, single

    @staticmethod
    def _check_eps(eps: float) -> float:
        eps = float(eps)
        if not (eps > 0 and math.isfinite(eps)):
            raise ValueError(f"eps must be a positive finite number, got {eps!r}")
        return eps

    # ================================================================ loss and gradient
    @differentiates
    def loss(self, delta: torch.Tensor) -> torch.Tensor:
        """``L(delta)`` for one shared shift ``[out, in, k, k]``; differentiable (also twice).

        Runs the plain-torch pieces (double backward), with the unshifted features recomputed
        the same way, so that ``L(0)`` is exactly 0."""
        return self._loss(delta)

    def _loss(self, delta: torch.Tensor) -> torch.Tensor:
        """:meth:`loss` in the caller's grad mode (under ``no_grad`` no graph is kept: the
        decorated :meth:`loss` records one through every latent, ~70 MB per latent on a
        512-channel 32 px model, while it sums them)."""
        if not isinstance(delta, torch.Tensor) or tuple(delta.shape) != self.shape:
            raise ValueError(
                f"delta must be {list(self.shape)}, got "
                f"{list(delta.shape) if isinstance(delta, torch.Tensor) else type(delta).__name__}"
            )
        total = 0
        with self.generator.reference_ops():
            for win in self._windows():
                for lo in range(0, len(win), self.batch_size):
                    hi = min(lo + self.batch_size, len(win))
                    idx = torch.arange(lo, hi, device=self.device)
                    one = self._one_latent(idx)
                    with torch.no_grad():
                        f0 = [f.detach() for f in self._features(win.state, idx, one, None)]
                    f1 = self._features(win.state, idx, one, delta.unsqueeze(0))
                    total = total + self.metric.distance_from_features(f0, f1).sum()
        return total / self.n

    def _grads(
        self, deltas: torch.Tensor, desc: str = "grad", paired: bool = False
    ) -> torch.Tensor:
        """``g(delta_p)`` for every ``deltas[p]`` (``[P, *shape]``), batched over (p, z), with
        the generator's parameters frozen (the layers then keep only what the shift's gradient
        needs).

        ``paired``: ``g(delta_p) - g(-delta_p)`` instead, both signs of a perturbation in the
        same chunk: sample pairs shift the layer by ``t * delta_p`` with ``t = +1`` and
        ``t = -1``, so the one gradient w.r.t. ``delta_p`` is the difference itself (exact: the
        sum of the ``t``-weighted gradients). The shifted layer then convolves each latent's
        input with each direction once for both signs, and its backward sums the pair's output
        gradients before the one weight-gradient convolution: half the layer's work."""
        out = torch.zeros_like(deltas)
        with frozen(self.generator):
            items = self._chunks(deltas.shape[0], desc, per_item=2 if paired else 1)
            for p_lo, p_hi, p_local, i, win in items:
                leaf = deltas[p_lo:p_hi].clone().requires_grad_(True)
                t = None
                if paired:
                    ones = torch.ones(len(i), dtype=self.dtype, device=self.device)
                    i, p_local = torch.cat([i, i]), torch.cat([p_local, p_local])
                    t = torch.cat([ones, -ones])
                one = self._one_latent(i)
                f0 = [self._rows(f, i, one) for f in self._window_features(win)]
                f1 = self._features(win.state, i, one, leaf, p_local, t)
                dist = self.metric.distance_from_features(f0, f1)
                (g,) = torch.autograd.grad(dist.sum(), leaf)
                out[p_lo:p_hi] += g
        return out / self.n

    @differentiates
    def grad(self, delta: torch.Tensor) -> torch.Tensor:
        """``dL/d delta`` at ``delta`` (``[out, in, k, k]``, or ``[P, ...]`` for several)."""
        d, single = self._check_block(delta, "delta")
        g = self._grads(d)
        return g[0] if single else g

    # ================================================================ Hessian-vector products
    @differentiates
    def hvp_fd(self, V: torch.Tensor, eps: float = 0.1, normalize: bool = False) -> torch.Tensor:
        """Central-difference products for a block ``V [m, out, in, k, k]`` (or one vector).

        Returns ``(g(eps v) - g(-eps v)) / (2 eps)`` ~= ``H v`` per vector, or with
        ``normalize=True`` the paper's eq. (4) exactly, ``(g(eps v) - g(-eps v)) / (2 eps ||v||)``
        ~= ``H v / ||v||``. All ``2m x n`` (perturbation, latent) samples run batched, chunked by
        ``batch_size``, one backward pass per chunk; the two signs of a perturbation share a
        chunk, whose backward gives their gradients' difference directly (:meth:`_grads`).
        """
        v, single = self._check_block(V)
        eps = self._check_eps(eps)
        if self.batch_size >= 2:
            hv = self._grads(eps * v, desc="hvp_fd", paired=True) / (2 * eps)
        else:  # a chunk of one sample cannot hold a pair: the two signs one after the other
            m = v.shape[0]
            g = self._grads(torch.cat([eps * v, -eps * v]), desc="hvp_fd")
            hv = (g[:m] - g[m:]) / (2 * eps)
        if normalize:
            hv = hv / self._norms(v)
        return hv[0] if single else hv

    @staticmethod
    def _norms(v: torch.Tensor) -> torch.Tensor:
        norms = v.flatten(1).norm(dim=1)
        if (norms == 0).any():
            raise ValueError("normalize=True needs non-zero vectors (the paper divides by ||v||)")
        return norms.view(-1, *([1] * (v.ndim - 1)))

    @differentiates
    def hvp_gn(self, V: torch.Tensor, mode: str = "auto") -> torch.Tensor:
        """Exact ``H v`` at ``delta = 0`` via Gauss-Newton (see the module docstring) for a block
        ``V [m, out, in, k, k]`` (or one vector).

        ``mode``: ``"linearized"`` (shared-primal tangent passes, the fast one), ``"forward"``
        (forward-mode AD, ``torch.autograd.forward_ad``), ``"double-backward"`` (JVP by
        reverse-over-reverse), or ``"auto"``: the first that works
        with this generator's ops (remembered in ``self.gn_mode_used``), else ``hvp_fd`` with a
        warning. On its first use "auto" also checks ``<v, Hv>`` for the block's first vector
        against the second difference of the loss (two forward passes) and rejects a mode that
        disagrees by more than 5 % (an op that silently drops tangents or second derivatives). A
        metric that is not quadratic in its features also falls back to ``hvp_fd``.
        """
        if mode not in GN_MODES:
            raise ValueError(f"mode must be one of {GN_MODES}, got {mode!r}")
        v, single = self._check_block(V)
        if not getattr(self.metric, "is_quadratic", False) or not callable(
            getattr(self.metric, "quadratic", None)
        ):
            warnings.warn(
                f"metric {getattr(self.metric, 'name', type(self.metric).__name__)!r} is not a "
                "quadratic form of feature differences: the Gauss-Newton product would not equal "
                "the Hessian; using the finite-difference product hvp_fd (eps=0.1) instead",
                stacklevel=2,
            )
            self.gn_mode_used = "fd"
            hv = self.hvp_fd(v)
            return hv[0] if single else hv
        if mode == "auto":
            modes = [self.gn_mode_used] if self.gn_mode_used else list(GN_MODES[1:])
        else:
            modes = [mode]
        errors = []
        for mo in modes:
            if mo == "fd":
                hv = self.hvp_fd(v)
                break
            try:
                hv = self._gn(v, mo)
            except (NotImplementedError, RuntimeError) as exc:
                if mode != "auto":
                    raise
                errors.append(f"{mo}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                continue
            if mode == "auto" and self.gn_mode_used is None:
                # First use: guard against ops that silently drop tangents / second derivatives.
                problem = self._check_quadratic_form(v[0], hv[0])
                if problem:
                    errors.append(f"{mo}: {problem}")
                    continue
            self.gn_mode_used = mo
            break
        else:
            warnings.warn(
                "exact Gauss-Newton product unavailable with these ops ("
                + "; ".join(errors)
                + "); using the finite-difference product hvp_fd (eps=0.1) instead",
                stacklevel=2,
            )
            self.gn_mode_used = "fd"
            hv = self.hvp_fd(v)
        return hv[0] if single else hv

    def _check_quadratic_form(self, v: torch.Tensor, hv: torch.Tensor, rtol: float = 0.05):
        """Compare ``<v, H v>`` with the second difference ``(L(h v) + L(-h v)) / h^2``
        (``L(0) = 0``; exact up to ``O(h^2)``) at a small step ``h`` (``1e-3 ||W|| / ||v||``, or
        the step whose predicted loss ``<v, Hv> h^2`` is ``_CHECK_LOSS`` if smaller).
        Two forward passes over the latents. Returns a problem description, or None."""
        vn = v.norm()
        if vn == 0:
            return None
        w = self.generator.kernel(self.layer).detach()
        h = 1e-3 * float(w.norm().clamp_min(1e-12)) / float(vn)
        quad = (v * hv).sum()
        if float(quad) > 0:
            # A step whose predicted loss is _CHECK_LOSS keeps the loss quadratic along
            # directions of large curvature: along a top eigenvector of a 512-channel layer,
            # 1e-3 of the kernel's norm changed the loss 13 % away from <v, Hv> h^2.
            h = min(h, math.sqrt(_CHECK_LOSS / float(quad)))
        with torch.no_grad():
            second = (self._loss(h * v) + self._loss(-h * v)) / (h * h)
        if not torch.isfinite(quad) or (quad - second).abs() > rtol * second.abs() + 1e-30:
            return (
                f"<v, Hv> = {float(quad):.4g} disagrees with the second difference of the loss "
                f"{float(second):.4g} (an op drops derivatives in this mode)"
            )
        return None

    def _gn(self, v: torch.Tensor, mode: str) -> torch.Tensor:
        with frozen(self.generator):
            if mode == "linearized":
                return self._gn_linearized(v)
            # Double backward / forward-mode AD: the plain-torch pieces (module docstring).
            with self.generator.reference_ops():
                return self._gn_chunks(v, mode)

    def _gn_linearized(self, v: torch.Tensor) -> torch.Tensor:
        """Tangents through :mod:`navcuda.models.linearize` (primal shared by the vectors), the
        metric's JVP by forward-mode AD on its features, one backward pass per chunk.

        A chunk is at most ``batch_size`` (vector, latent) samples (:meth:`_gn_layout`). The
        unshifted synthesis of a chunk of latents runs once (each latent's exactly once overall)
        and is shared by every vector; what it keeps (a slope mask per later layer) grows with the
        latents of a chunk, not with the vectors."""
        out = torch.zeros_like(v)
        m_c, n_c = self._gn_layout(v.shape[0])
        blocks = sum(math.ceil((hi - lo) / n_c) for lo, hi, _ in self._spans())
        bar = self._bar(blocks * math.ceil(v.shape[0] / m_c), "hvp_gn[linearized]")
        for win in self._windows():
            for lo in range(0, len(win), n_c):
                lin = self.generator.linearize(win.state.take(slice(lo, lo + n_c)))
                metric_lin = self.metric.linearize(self._resize(lin.image))
                for p0 in range(0, v.shape[0], m_c):
                    blk = v[p0 : p0 + m_c]
                    out[p0 : p0 + m_c] += self._gn_linearized_block(lin, metric_lin, blk)
                    bar.update()
            del win
        bar.close()
        return out / self.n

    def _gn_layout(self, m: int) -> tuple[int, int]:
        """``(vectors, latents)`` per chunk of a linearized product of ``m`` vectors: latents
        first, ``min(batch_size, n_latents)`` of them, and the vectors that fill the chunk (a
        streamed block shorter than that gives a smaller chunk).

        Every (vector, chunk) pair pays work on whole rows of ``N`` weights (the shifted layer's
        kernel tangent and its gradient, the output row's accumulation) while the primal of a
        latent runs once whatever the layout, so the fewer vectors a chunk holds the less of it:
        on the 512-channel ``convs.3`` (``N = 2.4e6``) ~56 ms per pair against ~73 ms per
        (vector, latent) sample. Measured there (16 latents, LPIPS-VGG, 2-core CPU): per
        product 2.85 s in chunks of 32 vectors x 1 latent, 1.55 s in 8 x 4, 1.40 s in 1 x 16; at
        batch 8, 2.09 s (8 x 1) and 1.58 s (1 x 8). On the bundled model the layouts are within
        the noise (55-71 ms). Per latent a chunk keeps the later layers' masks, per vector rows of
        ``N`` weights: on large layers the latents are also the smaller of the two."""
        n_c = max(1, min(self.batch_size, self.n))
        return min(m, max(1, self.batch_size // n_c)), n_c

    def _gn_linearized_block(self, lin, metric_lin, v: torch.Tensor) -> torch.Tensor:
        """``sum_i J_i^T 2A J_i v_p`` for the latents of ``lin`` and every vector of ``v``.

        Staged: the generator's tangents ``u = J_gen v`` of the whole block (their backward keeps
        only the primal's masks), then the image-space cotangent ``J_phi^T 2A J_phi u`` of the
        metric's features ``phi`` (``metric_lin``, :mod:`navcuda.metrics.linearize`; a
        forward-mode AD linearisation, whose graph holds per-sample activations, runs in groups
        of :func:`_metric_group` samples), then one backward pass through the generator's
        tangents."""
        vb = v.clone().requires_grad_(True)
        img_t = self._resize(lin.jvp(vb))
        group = None if metric_lin.shares_primal else _metric_group(self.batch_size)
        cot = metric_lin.gauss_newton(img_t.detach(), group)
        (g,) = torch.autograd.grad(img_t, vb, cot)
        return g

    def _gn_chunks(self, v: torch.Tensor, mode: str) -> torch.Tensor:
        out = torch.zeros_like(v)
        for p_lo, p_hi, p_local, i, win in self._chunks(v.shape[0], f"hvp_gn[{mode}]"):
            leaf = torch.zeros_like(v[p_lo:p_hi]).requires_grad_(True)
            d = leaf
            tangent = v[p_lo:p_hi]
            one = self._one_latent(i)
            if mode == "forward":
                with fwAD.dual_level():
                    feats = self._features(win.state, i, one, fwAD.make_dual(d, tangent), p_local)
                    unpacked = [fwAD.unpack_dual(f) for f in feats]
                    prim = [u.primal for u in unpacked]
                    jv = [
                        torch.zeros_like(u.primal) if u.tangent is None else u.tangent.detach()
                        for u in unpacked
                    ]
            else:
                prim = self._features(win.state, i, one, d, p_local)
                zeros = [torch.zeros_like(f, requires_grad=True) for f in prim]
                (jt_u,) = torch.autograd.grad(prim, d, zeros, create_graph=True)
                jv = list(torch.autograd.grad(jt_u, zeros, tangent, allow_unused=True))
                jv = [
                    torch.zeros_like(f) if j is None else j.detach()
                    for f, j in zip(prim, jv, strict=True)
                ]
            # cotangent = grad q(Jv) = Hess(q) Jv for the quadratic form q of the metric
            e = [j.requires_grad_(True) for j in jv]
            cot = torch.autograd.grad(self.metric.quadratic(e).sum(), e, allow_unused=True)
            cot = [torch.zeros_like(f) if c is None else c for f, c in zip(prim, cot, strict=True)]
            (g,) = torch.autograd.grad(prim, leaf, cot)
            out[p_lo:p_hi] += g
        return out / self.n

    @differentiates
    def hvp_reference(
        self, V: torch.Tensor, eps: float = 0.1, normalize: bool = False
    ) -> torch.Tensor:
        """The official sequential method (``HVP_forward.forward_step`` of yandex-research/navigan).

        One vector at a time; ``g`` evaluated at ``+eps v`` and ``-eps v`` by full syntheses from
        ``ws`` with a shared shift, in batches of ``batch_size`` latents, re-rendering the
        unshifted images every time (no reuse of the prefix state or of the features); ``g`` is the
        mean over batches of the gradient of ``metric(img0, img1).mean()``, weighted by batch size
        (the official code requires equal batches, where this is the same). Returns what
        :meth:`hvp_fd` returns for the same ``eps``/``normalize`` (up to float rounding).
        """
        v, single = self._check_block(V)
        eps = self._check_eps(eps)
        rows = []
        for vec in v:
            hv = (self._reference_g(eps * vec) - self._reference_g(-eps * vec)) / (2 * eps)
            if normalize:
                hv = hv / self._norms(vec.unsqueeze(0))[0]
            rows.append(hv)
        hv = torch.stack(rows)
        return hv[0] if single else hv

    def _reference_g(self, weight_delta: torch.Tensor) -> torch.Tensor:
        g = torch.zeros(self.shape, device=self.device, dtype=self.dtype)
        for chunk in self.inputs.chunks(self.batch_size):
            with torch.no_grad():
                img0 = self._resize(self.generator.render(chunk))
            delta = weight_delta.detach().clone().requires_grad_(True)
            img1 = self._resize(self.generator.render(chunk, LayerShift(self.layer, delta)))
            f0 = self.metric.features(img0)
            dist = self.metric.distance_from_features(f0, self.metric.features(img1)).mean()
            (gb,) = torch.autograd.grad(dist, delta)
            g += gb * (len(chunk) / self.n)
        return g

    # ================================================================ the whole matrix
    @differentiates
    def explicit_hessian(
        self,
        method: str = "gn",
        block: int = 64,
        max_params: int = 4096,
        eps: float = 0.1,
    ) -> torch.Tensor:
        """``H [N, N]`` (``N = out*in*k*k``, flattened like ``delta.flatten()``), column ``j`` =
        ``H e_j``, from products with the identity basis in blocks of ``block``.

        ``method``: ``"gn"`` (exact), ``"fd"`` (central differences, ``eps``) or ``"reference"``.
        Refuses layers with more than ``max_params`` weights.
        """
        if self.n_params > max_params:
            raise ValueError(
                f"layer {self.layer!r} has {self.n_params} weights > max_params={max_params}: the "
                "explicit Hessian is for tiny layers (raise max_params if you mean it)"
            )
        fns = {
            "gn": lambda b: self.hvp_gn(b),
            "fd": lambda b: self.hvp_fd(b, eps=eps),
            "reference": lambda b: self.hvp_reference(b, eps=eps),
        }
        if method not in fns:
            raise ValueError(f"method must be one of {sorted(fns)}, got {method!r}")
        n = self.n_params
        cols = []
        for lo in range(0, n, block):
            hi = min(lo + block, n)
            basis = torch.zeros(hi - lo, n, device=self.device, dtype=self.dtype)
            basis[torch.arange(hi - lo), torch.arange(lo, hi)] = 1
            cols.append(fns[method](basis.view(hi - lo, *self.shape)).reshape(hi - lo, n))
        return torch.cat(cols).t().contiguous()

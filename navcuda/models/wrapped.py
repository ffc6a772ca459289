"""Any torch generator behind navcuda's interface: :func:`wrap` ``(module, sample=...)``.

A wrapped generator is an ``nn.Module`` plus a *sampler* ``sample(n, seed, **cond)`` that returns
its inputs (a mapping of batched tensors, or :class:`~navcuda.models.interface.Inputs` when the
forward also takes options such as BigGAN's ``truncation``). navcuda renders it by calling
``forward(module, inputs)`` (default: ``module(**tensors, **options)``).

Shiftable layers: every ``torch.nn.Conv2d``, every ``torch.nn.ConvTranspose2d`` with
``groups == 1``, and navcuda's modulated convolutions (``StyledConv``, and ``ModulatedConv2d``
outside StyledConv/ToRGB). Their effective kernel is the weight they convolve with: a
parametrisation (``torch.nn.utils.parametrize``: spectral or weight norm) or a hook-based
``torch.nn.utils.spectral_norm`` / ``weight_norm`` is evaluated as in an eval-mode forward, so a
shift ``t Delta`` acts on ``W_eff``, i.e. the layer convolves with ``W_eff + t Delta``. Kernels
are in navcuda's layout ``[out, in, kh, kw]`` for every kind (a transposed convolution's
``[in, out, kh, kw]`` is transposed; :data:`~navcuda.models.interface.KINDS`).

How a shift is applied: functionally, for one call. A convolution is linear in its weight, so
``conv(x, W_eff + t Delta) = conv(x, W_eff) + t conv(x, Delta)``: a forward hook, registered for
the call only and inert in other threads, adds ``t conv(x, Delta)`` to the layer's own output (so
any parametrisation, bias or padding mode stays the module's own). Per-sample shifts run one
dense convolution per distinct direction over its samples when directions repeat (strips,
calibration, Hessian blocks), else per-sample kernels as one grouped convolution or with
``torch.func.vmap`` (``per_sample=``; ``"auto"`` takes for each kind the one
``benchmarks/test_bench_wrapped.py`` measured faster: grouped for ``Conv2d``, vmap for
``ConvTranspose2d``). Modulated convolutions get the shift as an
argument (their demodulation is not linear). The module's parameters are never modified, and
:func:`wrap` puts it in eval mode: batch statistics and spectral-norm power iterations would make
the samples of a batch depend on each other and renders on the call history.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from navcuda.models.fingerprint import model_fingerprint
from navcuda.models.interface import (
    GeneratorError,
    Inputs,
    LatentSpace,
    LayerInfo,
    LayerShift,
    ShiftableGenerator,
    ShiftArg,
    shift_map,
)
from navcuda.models.stylegan2_layers import ModulatedConv2d, StyledConv, ToRGB
from navcuda.models.stylegan2_routes import conv_route
from navcuda.ops.shifted_modconv import SplitShift

__all__ = ["PER_SAMPLE", "WrappedGenerator", "effective_weight", "layer_kind", "wrap"]

#: How per-sample shifts of a plain convolution run: one grouped convolution over materialised
#: per-sample kernels, ``torch.func.vmap`` of the convolution, or ``"auto"`` (the faster of the
#: two for the layer's kind, measured: see ``_per_sample_conv``).
PER_SAMPLE = ("auto", "grouped", "vmap")

Sampler = Callable[..., "Mapping[str, torch.Tensor | None] | Inputs"]
Forward = Callable[[nn.Module, Inputs], torch.Tensor]

# The render call whose shifts the hooks apply (a token per call; None outside any): hooks of a
# call running in another thread see a different value and do nothing.
_ACTIVE: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "navcuda_wrapped", default=None
)


def layer_kind(module: nn.Module) -> str | None:
    """The :data:`~navcuda.models.interface.KINDS` entry of a module navcuda can shift, else
    None (a grouped transposed convolution has no single ``[out, in]`` layout: not shiftable)."""
    if isinstance(module, (StyledConv, ModulatedConv2d)):
        return "modulated"
    if isinstance(module, nn.ConvTranspose2d):
        return "conv_transpose2d" if module.groups == 1 else None
    if isinstance(module, nn.Conv2d):
        return "conv2d"
    return None


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The kernel a shiftable module convolves with, in navcuda's layout ``[out, in, kh, kw]``.

    A ``torch.nn.utils.parametrize`` parametrisation is evaluated by reading ``module.weight``;
    a hook-based ``spectral_norm`` / ``weight_norm`` by its own ``compute_weight`` as an eval-mode
    forward does it (no power iteration, ``u``/``v`` as stored)."""
    if isinstance(module, StyledConv):
        return module.conv.weight[0]
    if isinstance(module, ModulatedConv2d):
        return module.weight[0]
    w = None
    for hook in module._forward_pre_hooks.values():
        if getattr(hook, "name", None) != "weight" or not hasattr(hook, "compute_weight"):
            continue
        try:  # torch.nn.utils.spectral_norm: compute_weight(module, do_power_iteration)
            w = hook.compute_weight(module, do_power_iteration=False)
        except TypeError:  # torch.nn.utils.weight_norm: compute_weight(module)
            w = hook.compute_weight(module)
    if w is None:
        w = module.weight
    return w.transpose(0, 1) if isinstance(module, nn.ConvTranspose2d) else w


def _conv(module: nn.Module, x: torch.Tensor, w: torch.Tensor, out_hw: Sequence[int]):
    """The module's convolution of ``x`` with kernel ``w`` (navcuda layout), no bias; for a
    transposed convolution the output padding that gives ``out_hw`` (as the module's output)."""
    if isinstance(module, nn.ConvTranspose2d):
        pad = []
        for d in range(2):
            base = (
                (x.shape[2 + d] - 1) * module.stride[d]
                - 2 * module.padding[d]
                + module.dilation[d] * (w.shape[2 + d] - 1)
                + 1
            )
            pad.append(out_hw[d] - base)
        return F.conv_transpose2d(
            x, w.transpose(0, 1), None, module.stride, module.padding, tuple(pad), 1,
            module.dilation,
        )  # fmt: skip
    if module.padding_mode != "zeros":
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        return F.conv2d(x, w, None, module.stride, 0, module.dilation, module.groups)
    return F.conv2d(x, w, None, module.stride, module.padding, module.dilation, module.groups)


def _per_sample_conv(module, x, deltas, out_hw, how: str) -> torch.Tensor:
    """``conv(x_b, deltas_b)`` for every sample (``deltas [B, out, in, kh, kw]``): one grouped
    convolution, or ``vmap`` of the convolution; ``"auto"``: grouped for ``Conv2d``, vmap for
    ``ConvTranspose2d`` (the faster of the two for each in ``benchmarks/test_bench_wrapped.py``:
    vmap 1.07x the time of grouped for a 64-channel conv, grouped 1.09x that of vmap for the
    transposed one, batch 16 on the 2-core CPU)."""
    if how == "auto":
        how = "vmap" if isinstance(module, nn.ConvTranspose2d) else "grouped"
    if how == "vmap":
        one = functools.partial(lambda m, hw, xb, wb: _conv(m, xb[None], wb, hw)[0], module, out_hw)
        return torch.func.vmap(one)(x, deltas)
    b = x.shape[0]
    groups = 1 if isinstance(module, nn.ConvTranspose2d) else module.groups
    flat = deltas.reshape(b * deltas.shape[1], *deltas.shape[2:])  # [B*out, in/g, kh, kw]
    xs = x.reshape(1, b * x.shape[1], *x.shape[2:])
    if isinstance(module, nn.ConvTranspose2d):
        # [B*in, out, kh, kw] in torch's layout, one group per sample
        w = deltas.transpose(1, 2).reshape(b * deltas.shape[2], deltas.shape[1], *deltas.shape[3:])
        y = _grouped_transpose(module, xs, w, b, out_hw)
    else:
        grouped = _GroupedView(module, b * groups)
        y = _conv(grouped, xs, flat, out_hw)
    return y.reshape(b, -1, *y.shape[2:])


class _GroupedView:
    """A Conv2d's hyper-parameters with ``groups`` replaced (for one grouped call)."""

    def __init__(self, module: nn.Conv2d, groups: int) -> None:
        self.stride, self.padding, self.dilation = module.stride, module.padding, module.dilation
        self.padding_mode = module.padding_mode
        self._reversed_padding_repeated_twice = module._reversed_padding_repeated_twice
        self.groups = groups


def _grouped_transpose(module, xs, w, groups: int, out_hw) -> torch.Tensor:
    pad = []
    for d in range(2):
        base = (
            (xs.shape[2 + d] - 1) * module.stride[d]
            - 2 * module.padding[d]
            + module.dilation[d] * (w.shape[2 + d] - 1)
            + 1
        )
        pad.append(out_hw[d] - base)
    return F.conv_transpose2d(
        xs, w, None, module.stride, module.padding, tuple(pad), groups, module.dilation
    )


def _shift_term(module, x: torch.Tensor, out_hw, shift: LayerShift, how: str) -> torch.Tensor:
    """``t_b conv(x_b, Delta_b)`` for every sample of the batch (shape of the layer's output)."""
    b = x.shape[0]
    if shift.delta is not None:
        d = shift.delta
        if d.ndim == 4 or d.shape[0] == 1:
            return _conv(module, x, d.reshape(d.shape[-4:]), out_hw)
        return _per_sample_conv(module, x, d, out_hw, how)
    spec = shift.spec
    if isinstance(spec, SplitShift):
        used = torch.unique(spec.index)
        if 2 * used.numel() <= b:  # few directions: one dense convolution each, over its samples
            out = None
            for j in used.tolist():
                sel = (spec.index == j).nonzero().flatten()
                y = _conv(module, x[sel], spec.delta[j], out_hw) * spec.t[sel].view(-1, 1, 1, 1)
                out = y.new_zeros(b, *y.shape[1:]) if out is None else out
                out = out.index_add(0, sel, y)
            return out
    deltas = shift.materialise(tuple(effective_weight(module).shape))
    return _per_sample_conv(module, x, deltas, out_hw, how)


class WrappedGenerator(ShiftableGenerator):
    """A torch module and its sampler behind the generator interface (see :func:`wrap`)."""

    def __init__(
        self,
        module: nn.Module,
        sample: Sampler,
        *,
        forward: Forward | None = None,
        layers: Sequence[str] | None = None,
        num_classes: int = 0,
        latent: str | None = None,
        latent_readers: Sequence[str] = (),
        name: str | None = None,
        per_sample: Literal["auto", "grouped", "vmap"] = "auto",
    ) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"wrap() needs a torch.nn.Module, got {type(module).__name__}")
        if not callable(sample):
            raise TypeError(f"sample must be callable: sample(n, seed, **cond), got {sample!r}")
        if per_sample not in PER_SAMPLE:
            raise ValueError(f"per_sample must be one of {PER_SAMPLE}, got {per_sample!r}")
        if int(num_classes) < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.module = module.eval()
        self._sampler = sample
        self._sampler_kwargs = _keyword_names(sample)
        if num_classes and not self._takes("label"):
            raise GeneratorError(
                f"num_classes={num_classes} but the sampler takes no label= keyword: "
                "sample(n, seed, label=None) must draw the inputs of those classes"
            )
        self._forward = forward or _call_module
        self.num_classes = int(num_classes)
        self.architecture = f"wrapped:{name or type(module).__name__}"
        self.per_sample = per_sample
        self._modules = self._find_layers(layers)
        self._latent_key = latent
        self._latent: LatentSpace | None = None
        self._readers = list(latent_readers)
        for r in self._readers:
            self._reader_weight(r)  # named error now, not at SeFa time
        self._layer_list: list[LayerInfo] | None = None

    def _takes(self, keyword: str) -> bool:
        return keyword in self._sampler_kwargs or "**" in self._sampler_kwargs

    # ---- discovery of the layers
    def _find_layers(self, names: Sequence[str] | None) -> dict[str, nn.Module]:
        found: dict[str, nn.Module] = {}
        skip: set[str] = set()
        for name, m in self.module.named_modules():
            if isinstance(m, (StyledConv, ToRGB)):
                skip.add(f"{name}.conv" if name else "conv")
            if name not in skip and layer_kind(m) is not None:
                found[name] = m
        if names is None:
            if not found:
                raise GeneratorError(
                    f"{type(self.module).__name__} has no layer navcuda can shift (Conv2d, "
                    "ConvTranspose2d with groups=1, navcuda's modulated convolutions)"
                )
            return found
        chosen = {}
        for n in names:
            try:
                m = self.module.get_submodule(n)
            except AttributeError:
                raise GeneratorError(f"the module has no submodule {n!r}") from None
            if layer_kind(m) is None:
                raise GeneratorError(
                    f"layer {n!r} is a {type(m).__name__}, which navcuda cannot shift: supported "
                    "are Conv2d, ConvTranspose2d (groups=1) and navcuda's modulated convolutions"
                )
            chosen[n] = m
        return chosen

    def layers(self) -> list[LayerInfo]:
        """The shiftable layers in the order the forward runs them (those it never runs last),
        with the output resolution seen in a render of sample 0."""
        if self._layer_list is None:
            order, res = self._trace()
            names = order + [n for n in self._modules if n not in order]
            self._layer_list = []
            for i, n in enumerate(names):
                m = self._modules[n]
                shape = tuple(effective_weight(m).shape)
                self._layer_list.append(LayerInfo(n, layer_kind(m), shape, res.get(n), i))  # type: ignore[arg-type]
        return list(self._layer_list)

    def _trace(self) -> tuple[list[str], dict[str, int]]:
        order: list[str] = []
        res: dict[str, int] = {}

        def record(name, _m, _args, out):
            if name not in res and isinstance(out, torch.Tensor) and out.ndim == 4:
                order.append(name)
                res[name] = int(out.shape[2])

        handles = [
            m.register_forward_hook(functools.partial(record, n)) for n, m in self._modules.items()
        ]
        try:
            with torch.no_grad():
                self.render(self.sample(1, 0))
        finally:
            for h in handles:
                h.remove()
        return order, res

    # ---- the interface
    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self._first_tensor().device

    @property
    def dtype(self) -> torch.dtype:  # type: ignore[override]
        return self._first_tensor().dtype

    def _first_tensor(self) -> torch.Tensor:
        for t in (*self.module.parameters(), *self.module.buffers()):
            if t.is_floating_point():
                return t
        raise GeneratorError(f"{type(self.module).__name__} has no floating parameter")

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.module.parameters()

    def reference_ops(self) -> contextlib.AbstractContextManager:
        """navcuda's modulated convolutions (if the module has any) on their pure-torch
        references, which support forward-mode AD and double backward; torch's own layers
        support both anyway."""
        return conv_route(impl="ref")

    def to(self, device: torch.device | str) -> WrappedGenerator:
        """Move the module to ``device`` (in place, as ``nn.Module.to``); returns self."""
        self.module.to(device)
        return self

    def kernel(self, layer: int | str) -> torch.Tensor:
        return effective_weight(self._modules[self.layer(layer).name])

    def fingerprint(self) -> str:
        return model_fingerprint(self.module)

    @property
    def latent(self) -> LatentSpace | None:  # type: ignore[override]
        if self._latent_key is None or self._latent is not None:
            return self._latent
        x = self.sample(1, 0)
        if self._latent_key not in x:
            raise GeneratorError(
                f"latent={self._latent_key!r}, but the sampler returns {sorted(x.tensors)}"
            )
        key = self._latent_key
        standalone = len([t for t in x.tensors.values() if t is not None]) == 1
        self._latent = LatentSpace(key, int(x[key].shape[-1]), "w", standalone)
        return self._latent

    def latent_readers(self, layers=None) -> list[torch.Tensor]:
        """The weights given as ``latent_readers`` to :func:`wrap` (``layers`` is ignored)."""
        if not self._readers:
            return super().latent_readers(layers)
        return [self._reader_weight(r) for r in self._readers]

    def _reader_weight(self, name: str) -> torch.Tensor:
        try:
            m = self.module.get_submodule(name)
        except AttributeError:
            raise GeneratorError(f"latent reader {name!r}: no such submodule") from None
        if not isinstance(m, nn.Linear):
            raise GeneratorError(f"latent reader {name!r} must be an nn.Linear, got {type(m)}")
        return effective_weight(m)

    def sample(
        self, n: int, seed: int | torch.Generator = 0, *, truncation_psi: float = 1.0, label=None
    ) -> Inputs:
        """The sampler's ``n`` inputs for ``seed``, checked (batched tensors of ``n`` rows) and
        moved to the module's device (floating tensors in its dtype). ``truncation_psi`` reaches
        a sampler that takes it, and is ignored otherwise. A ``torch.Generator`` seed (a
        training loop's stream) reaches the sampler as an int drawn from it in ``[0, 2**32)``,
        the seeds ``numpy.random.RandomState`` takes (BigGAN's ``truncated_noise_sample``)."""
        lab = self.check_label(label, n)
        if isinstance(seed, torch.Generator):  # the sampler takes an int: draw one from it
            seed = int(torch.randint(0, 2**32, (), generator=seed))
        kwargs: dict[str, Any] = {}
        if lab is not None:
            kwargs["label"] = lab
        if truncation_psi != 1.0 and self._takes("truncation_psi"):
            kwargs["truncation_psi"] = truncation_psi
        out = self._sampler(int(n), int(seed), **kwargs)
        inputs = out if isinstance(out, Inputs) else _as_inputs(out)
        if len(inputs) != n:
            raise GeneratorError(f"the sampler returned a batch of {len(inputs)} for n={n}")
        return inputs.to(self.device, self.dtype)

    def render(self, inputs: Inputs, shift: ShiftArg = None) -> torch.Tensor:
        if not isinstance(inputs, Inputs):
            raise GeneratorError(
                f"render() takes navcuda Inputs (generator.sample(n, seed)), got "
                f"{type(inputs).__name__}"
            )
        batch = len(inputs)
        shifts = shift_map(shift)
        for name, s in list(shifts.items()):
            info = self.layer(name)
            s.check(info, self.kernel(info.name), batch)
            shifts[info.name] = shifts.pop(name)
        with self._hooks(shifts) as fired:
            out = self._forward(self.module, inputs)
        missing = [n for n in shifts if n not in fired]
        if missing:
            raise GeneratorError(f"layer(s) {missing} were shifted but the forward never ran them")
        if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != batch:
            got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise GeneratorError(f"the forward must return images [B={batch}, C, H, W], got {got}")
        return out

    @contextlib.contextmanager
    def _hooks(self, shifts: dict[str, LayerShift]) -> Iterator[set[str]]:
        token = object()
        fired: set[str] = set()
        handles = []
        for name, s in shifts.items():
            m = self._modules[name]
            if layer_kind(m) == "modulated":
                hook = functools.partial(_inject_shift, token, name, s, fired)
                handles.append(m.register_forward_pre_hook(hook, with_kwargs=True))
            else:
                hook = functools.partial(_add_shift, token, name, s, fired, self.per_sample)
                handles.append(m.register_forward_hook(hook))
        reset = _ACTIVE.set(token)
        try:
            yield fired
        finally:
            _ACTIVE.reset(reset)
            for h in handles:
                h.remove()


def _add_shift(token, name, shift: LayerShift, fired: set, how: str, module, args, out):
    if _ACTIVE.get() is not token:
        return None
    x = args[0]
    if x.shape[0] != out.shape[0]:
        raise GeneratorError(f"layer {name!r}: input batch {x.shape[0]} != output {out.shape[0]}")
    fired.add(name)
    return out + _shift_term(module, x, out.shape[2:], shift, how).to(out.dtype)


def _inject_shift(token, name, shift: LayerShift, fired: set, module, args, kwargs):
    if _ACTIVE.get() is not token:
        return None
    fired.add(name)
    if isinstance(module, StyledConv):
        param, value = "shift", shift.spec if shift.spec is not None else shift.delta
    else:
        param, value = "delta", shift.materialise(tuple(module.weight.shape[1:]))
    bound = inspect.signature(module.forward).bind(*args, **kwargs)
    bound.arguments[param] = value  # (given positionally or by name, or not at all)
    return bound.args, bound.kwargs


def _keyword_names(fn: Callable) -> set[str]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return {"**"}
    names = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    if any(p.kind == p.VAR_KEYWORD for p in params):
        names.add("**")
    return names


def _as_inputs(out: object) -> Inputs:
    if not isinstance(out, Mapping):
        raise GeneratorError(
            "the sampler must return a mapping of input names to batched tensors (or navcuda "
            f"Inputs), got {type(out).__name__}"
        )
    try:
        return Inputs(out)
    except GeneratorError as exc:
        raise GeneratorError(f"the sampler returned unusable inputs: {exc}") from None


def _call_module(module: nn.Module, inputs: Inputs) -> torch.Tensor:
    return module(**inputs.tensors, **inputs.options)


def wrap(
    module: nn.Module,
    sample: Sampler,
    *,
    forward: Forward | None = None,
    layers: Sequence[str] | None = None,
    num_classes: int = 0,
    latent: str | None = None,
    latent_readers: Sequence[str] = (),
    name: str | None = None,
    per_sample: Literal["auto", "grouped", "vmap"] = "auto",
) -> WrappedGenerator:
    """Make any torch generator usable by every navcuda method (module docstring).

    Args:
        module: the generator (put in eval mode; never modified otherwise).
        sample: ``sample(n, seed, **cond) -> {name: tensor [n, ...]}`` (or ``Inputs`` with
            options): reproducible inputs, the same for a seed on every device. Given
            ``label=`` (``[n]`` class indices) when the caller asks for a class, and
            ``truncation_psi=`` when one is asked for (a sampler without those keywords refuses
            them with a named error).
        forward: ``forward(module, inputs) -> images [B, C, H, W]`` in about ``[-1, 1]``; default
            ``module(**inputs.tensors, **inputs.options)``.
        layers: restrict the shiftable layers to these module names (default: all found).
        num_classes: for a conditional generator, the number of classes its labels index.
        latent: the input that latent-space directions (GANSpace) shift, e.g. ``"z"``.
        latent_readers: names of ``nn.Linear`` modules that read exactly ``latent`` (SeFa).
        name: recorded in direction files (``model``) as ``wrapped:<name>``.
        per_sample: per-sample kernels as one grouped convolution or ``vmap`` (:data:`PER_SAMPLE`).
    """
    return WrappedGenerator(
        module, sample, forward=forward, layers=layers, num_classes=num_classes, latent=latent,
        latent_readers=latent_readers, name=name, per_sample=per_sample,
    )  # fmt: skip

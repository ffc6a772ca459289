"""The memory model of :class:`navcuda.hessian.PerceptualHessian` and its plan under a budget.

What a Hessian holds, by what it grows with:

- per latent: its cache -- the activations before the layer (the generator's ``split``: on
  StyleGAN2 ``x`` and the RGB skip sum), its inputs, and, for finite-difference products and
  gradients, the metric's features of the unshifted image;
- per vector: a product's input and output rows (``N`` weights each, in the generator's dtype);
- per chunk: the transient of one chunk of ``batch_size`` (vector, latent) samples -- the
  tangents or shifted renders, the metric's activations, the backward -- measured on one latent
  (:func:`navcuda.memory_budget.measure_peak`).

Under a budget it keeps the caches of the first ``resident`` latents and streams the others in
blocks of ``window`` latents, recomputed per block (the prefix synthesis, and the unshifted
features for FD products): peak memory is then flat in the number of latents. Recomputing was
measured against storing the blocks on disk (``benchmarks/RESULTS.md``, "Spectrum memory").
"""

from __future__ import annotations

from dataclasses import dataclass

from navcuda.memory_budget import MemoryBudgetError, format_bytes

__all__ = ["HessianMemory", "plan_latents"]


@dataclass(frozen=True)
class HessianMemory:
    """Bytes a :class:`~navcuda.hessian.PerceptualHessian` needs, and how it keeps its latents.

    ``per_latent`` = ``per_latent_prefix + per_latent_features`` (the features count when they
    are kept: FD products); ``per_vector``: a product's input plus output row; ``per_chunk``: the
    measured transient of one chunk of ``chunk_vectors`` vectors on ``chunk_latents`` latents,
    including those vectors' output rows (None when not measured: no budget);
    ``chunk_seconds``: its time, ``primal_seconds`` the part of it that the chunk's latents'
    unshifted pass takes, shared by every vector of a product block (0 for FD products).
    ``resident`` latents are cached, the rest streamed ``window`` at a time (0: none streamed).
    """

    n_latents: int
    batch_size: int
    per_latent_prefix: int
    per_latent_features: int
    per_vector: int
    per_chunk: int | None
    chunk_vectors: int
    chunk_latents: int
    chunk_seconds: float | None
    primal_seconds: float | None
    budget: int | None
    resident: int
    window: int
    product: str

    @property
    def per_latent(self) -> int:
        return self.per_latent_prefix + self.per_latent_features

    @property
    def streamed(self) -> bool:
        return self.resident < self.n_latents

    def peak(self, vectors: int) -> int:
        """Expected peak of a product of ``vectors`` vectors: the cached and streamed latents, one
        chunk, and the vectors' rows (the probe's chunk already holds ``chunk_vectors`` output
        rows)."""
        chunk = self.per_chunk or 0
        extra_out = max(0, vectors - self.chunk_vectors) * self.per_vector // 2
        inputs = vectors * self.per_vector // 2
        return (self.resident + 2 * self.window) * self.per_latent + chunk + extra_out + inputs

    def seconds_per_product(self, vectors: int = 1) -> float | None:
        """Expected seconds for the product of one vector over every latent in a block of
        ``vectors`` vectors (the latents' primal shared by the block; from the probe)."""
        if self.chunk_seconds is None:
            return None
        primal = self.primal_seconds or 0.0
        own = (self.chunk_seconds - primal) / self.chunk_vectors
        return (own + primal / max(1, vectors)) / self.chunk_latents * self.n_latents

    def describe(self, vectors: int | None = None) -> str:
        """The model in a few lines (printed before a spectrum run)."""
        vec = self.chunk_vectors if vectors is None else vectors
        lines = [
            f"per latent {format_bytes(self.per_latent)} (prefix activations "
            f"{format_bytes(self.per_latent_prefix)}"
            + (
                f", unshifted features {format_bytes(self.per_latent_features)}"
                if self.per_latent_features
                else ""
            )
            + f"); per vector {format_bytes(self.per_vector)} (product input + output)",
        ]
        if self.per_chunk is not None:
            lines.append(
                f"per block (one chunk of {self.batch_size} samples, {self.chunk_vectors} vectors "
                f"x {self.chunk_latents} latents, {self.product}) {format_bytes(self.per_chunk)}, "
                f"{self.chunk_seconds:.2f} s"
            )
        keep = (
            f"all {self.n_latents} latents cached"
            if not self.streamed
            else f"{self.resident} of {self.n_latents} latents cached, the rest recomputed "
            f"{self.window} at a time"
        )
        budget = (
            "no budget" if self.budget is None else f"Hessian's budget {format_bytes(self.budget)}"
        )
        lines.append(f"{keep} ({budget}); expected peak {format_bytes(self.peak(vec))} for "
                     f"products of {vec} vectors")  # fmt: skip
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """A JSON-able record (stored with a spectrum's direction set)."""
        return {
            "per_latent": self.per_latent,
            "per_latent_prefix": self.per_latent_prefix,
            "per_latent_features": self.per_latent_features,
            "per_vector": self.per_vector,
            "per_chunk": self.per_chunk,
            "chunk_vectors": self.chunk_vectors,
            "chunk_latents": self.chunk_latents,
            "chunk_seconds": self.chunk_seconds,
            "primal_seconds": self.primal_seconds,
            "budget": self.budget,
            "resident": self.resident,
            "window": self.window,
            "product": self.product,
        }


def plan_latents(
    n: int, batch_size: int, per_latent: int, fixed: int, budget: int | None
) -> tuple[int, int]:
    """``(resident, window)``: latents to cache and latents per streamed block, so that
    ``fixed + (resident + 2 window) * per_latent <= budget`` (``fixed``: one chunk and its
    vectors; two blocks: the next is recomputed while the last is still held).

    Everything is cached when it fits (or with no budget); otherwise blocks of up to
    ``batch_size`` latents (a chunk never needs more) are streamed and the rest of the room
    caches the first latents. Raises :class:`MemoryBudgetError` with the figures when one chunk
    and two latents' caches do not fit."""
    if budget is None or fixed + n * per_latent <= budget:
        return n, 0
    # Streaming keeps up to two blocks alive (the next one is computed while a product still
    # holds the last), so the room must take two.
    room = (budget - fixed) // max(1, per_latent)
    if room < 2:
        raise MemoryBudgetError(
            f"memory budget {format_bytes(budget)} is too small for one chunk: "
            f"{format_bytes(fixed)} for a chunk of {batch_size} samples and its vectors plus "
            f"{format_bytes(2 * per_latent)} for two latents' caches (one streamed block and the "
            f"next) = {format_bytes(fixed + 2 * per_latent)}; raise the budget (--memory-budget) "
            "or lower batch_size (a chunk's memory grows with it)"
        )
    window = min(n, batch_size, room // 2)
    return min(n - window, room - 2 * window), window

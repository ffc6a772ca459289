"""The Hessian under a memory budget: cached latents plus blocks recomputed per product give the
products of the fully cached Hessian (float64: to rounding), peak memory stops growing with the
latents, and a budget too small for one chunk is refused with the figures."""

from __future__ import annotations

import pytest
import torch

from navcuda.hessian import PerceptualHessian
from navcuda.hessian_memory import plan_latents
from navcuda.memory_budget import MemoryBudgetError, measure_peak, parse_size
from navcuda.metrics.perceptual import RandomFeatureLPIPS
from navcuda.models.stylegan2 import Generator, GeneratorConfig

LAYER = "convs.3"
BS = 4


@pytest.fixture(scope="module")
def gen():
    cfg = GeneratorConfig(
        resolution=16, z_dim=32, w_dim=32, n_mlp=2, channel_map={4: 8, 8: 6, 16: 4}
    )
    torch.manual_seed(0)
    g = Generator(cfg).eval().double()
    ws = g.mapping(torch.randn(24, g.config.z_dim, dtype=torch.float64)).detach()
    return g, ws


def _metric():
    return RandomFeatureLPIPS(seed=0, channels=(8, 16)).double()


def _hessian(g, ws, budget=None, product="gn"):
    return PerceptualHessian(g, LAYER, ws, _metric(), batch_size=BS, resize=8,
                             memory_budget=budget, budget_product=product)  # fmt: skip


def _budget_for(h: PerceptualHessian, latents: int) -> int:
    """A budget whose room is ``latents`` latents' caches after one chunk and its vectors."""
    m = h.memory
    row = m.per_vector // 2
    return m.per_chunk + m.chunk_vectors * row + latents * m.per_latent + m.per_latent // 2


def _unit(h, m, seed):
    v = torch.randn(m, *h.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1, 1)


def test_streamed_products_equal_cached(gen):
    g, ws = gen
    ws = ws[:8]
    full = _hessian(g, ws)
    assert not full.memory.streamed and full.memory.per_chunk is None  # no budget: no probe
    probe = _hessian(g, ws, "1TB", "fd")
    assert not probe.memory.streamed and probe.memory.per_chunk > 0
    assert probe.memory.per_latent_features > 0  # FD: the unshifted features are kept
    h = _hessian(g, ws, _budget_for(probe, 7), "fd")  # room 7: blocks of 3, one latent cached
    assert (h.memory.resident, h.memory.window) == (1, 3)
    assert [s[:2] for s in h._spans()] == [(0, 1), (1, 4), (4, 7), (7, 8)]
    v = _unit(h, 5, 1)
    pairs = [
        (full.hvp_gn(v), h.hvp_gn(v)),
        (full.hvp_gn(v[:2], mode="forward"), h.hvp_gn(v[:2], mode="forward")),
        (full.hvp_fd(v), h.hvp_fd(v)),
        (full.grad(0.1 * v[:2]), h.grad(0.1 * v[:2])),
        (full.hvp_fd(v[:1]), h.hvp_fd(v[:1])),  # chunks of several latents
        (full.loss(0.1 * v[0]).reshape(1), h.loss(0.1 * v[0]).reshape(1)),
    ]
    for a, b in pairs:
        assert ((a - b).norm() / a.norm()).item() < 1e-12
    gn = _hessian(g, ws, _budget_for(probe, 7))
    assert gn.memory.per_latent_features == 0 and not gn.memory.streamed  # GN: prefix only
    gn = _hessian(g, ws, _budget_for(gn, 7))
    assert (gn.memory.resident, gn.memory.window) == (1, 3)
    assert ((gn.hvp_gn(v) - pairs[0][0]).norm() / pairs[0][0].norm()).item() < 1e-12


def test_peak_is_flat_in_the_latents_past_the_budget(gen):
    g, ws = gen
    probe = _hessian(g, ws[:4], "1TB")
    budget = _budget_for(probe, 6)
    peaks = []
    for n in (8, 24):
        h = _hessian(g, ws[:n], budget)
        assert h.memory.streamed and h.memory.resident + 2 * h.memory.window <= 6
        v = _unit(h, 6, 2)
        _, peak, _ = measure_peak(lambda h=h, v=v: h.hvp_gn(v), h.device)
        peaks.append(peak)
        assert peak <= h.memory.peak(6) * 1.2
    assert peaks[1] <= 1.2 * peaks[0], peaks


def test_first_gn_check_keeps_no_graph(gen):
    """The check of the first Gauss-Newton product (two loss evaluations over every latent) runs
    without autograd history: its memory does not grow with the latents (it kept a graph per
    latent, ~70 MB each on a 512-channel 32 px model)."""
    g, ws = gen
    peaks = []
    for n in (4, 16):
        h = _hessian(g, ws[:n])
        v = _unit(h, 1, 3)[0]
        _, peak, _ = measure_peak(lambda h=h, v=v: h._check_quadratic_form(v, v), h.device)
        peaks.append(peak)
    assert peaks[1] <= 1.5 * peaks[0], peaks


def test_budget_too_small_for_one_chunk_is_refused(gen):
    g, ws = gen
    with pytest.raises(MemoryBudgetError, match=r"too small for one chunk: .* for a chunk of 4"):
        _hessian(g, ws[:8], 1000)
    with pytest.raises(MemoryBudgetError, match="cannot read the memory size"):
        _hessian(g, ws[:8], "lots")


def test_memory_model_is_described(gen):
    g, ws = gen
    h = _hessian(g, ws[:8], "1TB")
    text = h.memory.describe(vectors=12)
    assert "per latent" in text and "per vector" in text and "per block" in text
    assert "all 8 latents cached" in text and "products of 12 vectors" in text
    assert h.memory.seconds_per_product() > 0
    assert h.describe()["memory"]["resident"] == 8
    m = h.memory
    assert (m.chunk_vectors, m.chunk_latents) == h._gn_layout(BS) == (1, 4)
    assert 0 <= m.primal_seconds <= m.chunk_seconds


def test_expected_time_shares_the_primal_across_a_block():
    from dataclasses import replace

    from navcuda.hessian_memory import HessianMemory

    m = HessianMemory(n_latents=16, batch_size=8, per_latent_prefix=1, per_latent_features=0,
                      per_vector=2, per_chunk=10, chunk_vectors=1, chunk_latents=8,
                      chunk_seconds=3.0, primal_seconds=2.0, budget=None, resident=16, window=0,
                      product="gn")  # fmt: skip
    # one vector pays the whole chunk per 8 latents; 80 vectors share its 2 s of primal
    assert m.seconds_per_product(1) == pytest.approx(6.0)
    assert m.seconds_per_product(80) == pytest.approx((1.0 + 2.0 / 80) * 2)
    assert replace(m, chunk_seconds=None).seconds_per_product(80) is None


def test_plan_latents():
    assert plan_latents(10, 4, 100, 1000, None) == (10, 0)
    assert plan_latents(10, 4, 100, 1000, 2000) == (10, 0)
    assert plan_latents(10, 4, 100, 1000, 1999) == (1, 4)  # room 9: two blocks of 4, one cached
    assert plan_latents(10, 4, 100, 1000, 1250) == (0, 1)
    with pytest.raises(MemoryBudgetError, match="1.2 kB"):
        plan_latents(10, 4, 100, 1000, 1150)


def test_parse_size():
    assert parse_size("24GB") == 24 * 10**9
    assert parse_size("512 MiB") == 512 * 2**20
    assert parse_size(1e6) == 10**6
    assert parse_size("1.5e3") == 1500
    assert 0 < parse_size("50%") <= parse_size("100%")
    for bad in ("24 parsecs", "0", "-3GB", "150%", True, [1]):
        with pytest.raises(MemoryBudgetError):
            parse_size(bad)


def test_probe_timing_takes_the_fastest_run():
    """A busy neighbour only adds time: one slowed run of the probe must not set the estimate."""
    import time

    from navcuda.hessian import _fastest

    delays = iter([0.2, 0.0])
    assert _fastest([lambda: time.sleep(next(delays))], torch.device("cpu"))[0] < 0.1


def test_probe_timings_take_turns():
    """The probe's two timings (one and two vectors) alternate, so a busy spell as long as two
    calls cannot slow both runs of one of them: their difference is the estimate's main part."""
    import time

    from navcuda.hessian import _fastest

    calls = []
    busy = iter([0.2, 0.2, 0.0, 0.0])  # a spell over the first two calls

    def timed(name):
        return lambda: (calls.append(name), time.sleep(next(busy)))

    one, two = _fastest([timed("one"), timed("two")], torch.device("cpu"))
    assert calls == ["one", "two", "one", "two"]
    assert one < 0.1 and two < 0.1

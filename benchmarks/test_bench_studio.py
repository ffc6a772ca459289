"""The studio's slider latency (:mod:`studio_latency`): median and p90 of a slider change ->
new image through the app's request path, beside the bare render; target median <= 150 ms on 2
CPU cores. Prints the report; ``extra_info`` holds the figures."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("gradio")
pytest.importorskip("httpx")


def test_studio_slider_latency(benchmark, device):
    if device.type != "cpu":
        pytest.skip("the studio's latency target is for 2 CPU cores")
    from studio_latency import measure

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = benchmark.pedantic(lambda: measure(n=40), rounds=1, iterations=1)
    finally:
        torch.set_num_threads(threads)
    benchmark.group = "studio slider latency"
    benchmark.extra_info.update(result.summary())
    print("\n" + result.report())

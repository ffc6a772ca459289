"""Studio latency: a slider change -> the new image, through the app's own request path.

Starts the studio on the bundled model on a free localhost port and moves the ``eye size``
slider through ``--n`` values over the app's HTTP API, as a browser does: the event is posted to
Gradio's queue (``POST /gradio_api/call/edit``), its result read from the event stream, then the
new PNG fetched (what the browser waits for before it can show the image). It also times the
bare render of the same states
(:func:`navcuda.recipe.render_recipe`, no server), alternating the two call by call so that the
machine's background load affects both alike. Prints the median and p90 of both and the
app's overhead over the bare render; the target is a median of at most 150 ms on 2 CPU cores::

    python benchmarks/studio_latency.py [--n 60] [--threads 2]

``benchmarks/test_bench_studio.py`` runs it under pytest-benchmark.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch

TARGET_MEDIAN_MS = 150.0


@dataclass
class Latency:
    """Milliseconds per slider change: through the app (``app``) and bare (``bare``)."""

    app: list[float]
    bare: list[float]

    @staticmethod
    def _p(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]

    def summary(self) -> dict[str, float]:
        app_med, bare_med = statistics.median(self.app), statistics.median(self.bare)
        return {
            "app_median_ms": app_med,
            "app_p90_ms": self._p(self.app, 90),
            "bare_median_ms": bare_med,
            "bare_p90_ms": self._p(self.bare, 90),
            "overhead_ms": app_med - bare_med,
            "overhead_ratio": (app_med - bare_med) / bare_med,
        }

    def report(self) -> str:
        s = self.summary()
        ok = "meets" if s["app_median_ms"] <= TARGET_MEDIAN_MS else "misses"
        return (
            f"slider -> image through the app: median {s['app_median_ms']:.1f} ms, p90 "
            f"{s['app_p90_ms']:.1f} ms ({ok} the {TARGET_MEDIAN_MS:.0f} ms target)\n"
            f"bare render of the same states: median {s['bare_median_ms']:.1f} ms, p90 "
            f"{s['bare_p90_ms']:.1f} ms\n"
            f"app overhead: {s['overhead_ms']:.1f} ms = {s['overhead_ratio']:.2f} x the bare "
            f"render (app / bare = {s['app_median_ms'] / s['bare_median_ms']:.2f})"
        )


def measure(n: int = 60, warmup: int = 5) -> Latency:
    """Time ``n`` slider changes through the app, each followed by the same state rendered
    bare."""
    import tempfile

    import httpx

    from navcuda.models.default import load_default
    from navcuda.recipe import DirectionSource, render_recipe
    from navcuda.rendering import to_rgb
    from navcuda.studio import Studio
    from navcuda.studio.app import free_port, launch

    g = load_default()
    studio = Studio(g, [DirectionSource.bundled()], tempfile.mkdtemp(prefix="navcuda-bench-"))
    values = [round(-3 + 6 * (i % 25) / 24, 2) for i in range(n + warmup)]
    k = len(studio.sliders)
    state = studio.initial()
    port = free_port()
    app = launch(studio, port=port, block=False)
    app_ms, bare_ms = [], []
    base = f"http://127.0.0.1:{port}/gradio_api"
    try:
        with httpx.Client(timeout=60) as http:
            for i, v in enumerate(values):  # alternated: the machine's load drifts alike
                sliders = [v] + [0.0] * (k - 1)
                t0 = time.perf_counter()
                expect = f"{studio.sliders[0].label} {v:+.2f}x" if v else "no edit"
                _slider_change(http, base, sliders, expect)
                t1 = time.perf_counter()
                s = studio.update(state, sliders)
                to_rgb(render_recipe(g, studio.recipe(s), studio.sources))
                t2 = time.perf_counter()
                if i >= warmup:
                    app_ms.append(1000 * (t1 - t0))
                    bare_ms.append(1000 * (t2 - t1))
    finally:
        app.close()
    return Latency(app_ms, bare_ms)


def _slider_change(http, base: str, sliders: list[float], expect: str) -> None:
    """One slider change through the app: post the event, read its result, fetch the image."""
    import json

    r = http.post(f"{base}/call/edit", json={"data": [0, 0.7, "", *sliders]})
    r.raise_for_status()
    event = r.json()["event_id"]
    result = None
    with http.stream("GET", f"{base}/call/edit/{event}") as stream:
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:") and kind in ("complete", "error"):
                result = json.loads(line[5:])
                break
    if kind != "complete" or result is None or expect not in result[3]:
        raise RuntimeError(f"the studio did not render the change: {kind} {result}")
    http.get(result[2]["url"]).raise_for_status()  # the new PNG, as the browser loads it


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=60, help="slider changes timed")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU cores)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} threads, {args.n} slider changes")
    print(measure(args.n).report())


if __name__ == "__main__":
    main()

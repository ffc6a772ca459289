"""The studio's web UI (Gradio): the controls of a :class:`~navcuda.studio.session.Studio`, its
images side by side, undo / reset, photo upload, recipe loading and exports.

Each browser session keeps its undo history (a :class:`~navcuda.studio.session.History` of
:class:`~navcuda.studio.session.EditState`) in a ``gr.State``; every control's ``input`` event
(user changes only, not the updates undo makes) renders the new state. Refused requests raise
``gr.Error`` with the error's class name and message, and change nothing.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Callable
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local tool: no telemetry

import gradio as gr  # noqa: E402

from navcuda.recipe import LatentInput, RecipeError  # noqa: E402
from navcuda.studio.session import HISTORY, EditState, History, Studio, StudioError  # noqa: E402

__all__ = ["HISTORY", "build_app", "free_port", "launch"]

#: Small generated images are scaled up without smoothing.
CSS = (
    "#original img, #edited img { image-rendering: pixelated; width: 100%; height: 100%; "
    "object-fit: contain; }"
)
#: The projection's progress bar in the UI (Gradio follows its tqdm bar).
_PROGRESS = gr.Progress(track_tqdm=True)


def _error(exc: Exception) -> gr.Error:
    return gr.Error(f"{type(exc).__name__}: {exc}", print_exception=False)


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a handler; navcuda's refusals become a ``gr.Error`` naming them."""

    @functools.wraps(fn)  # Gradio reads the signature (inputs, gr.Progress)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (StudioError, RecipeError, FileNotFoundError) as exc:
            raise _error(exc) from None

    return run


def _input_key(s: EditState) -> tuple:
    return (s.seed, s.truncation, s.label, id(s.latent))


def _status(studio: Studio, s: EditState) -> str:
    where = (
        f"photo {s.latent.source or ''} (projected)"
        if isinstance(s.latent, LatentInput)
        else f"seed {s.seed}, truncation {s.truncation:g}"
        + ("" if s.label is None else f", class {s.label}")
    )
    edits = [
        f"{sl.label} {v:+.2f}{'x' if sl.relative else ''}"
        for sl, v in zip(studio.sliders, s.values, strict=True)
        if v
    ]
    return f"{where} | " + (", ".join(edits) if edits else "no edit")


def build_app(studio: Studio, seed: int = 0, truncation: float = 0.7) -> gr.Blocks:
    """The Gradio app of ``studio`` (not launched: :func:`launch`)."""
    start = studio.initial(seed, truncation)
    conditional = studio.generator.num_classes > 0
    with gr.Blocks(title="navcuda studio", analytics_enabled=False) as app:
        history = gr.State(History.start(start, HISTORY))
        gr.Markdown("## navcuda studio")
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                seed_box = gr.Number(value=seed, precision=0, minimum=0, label="seed",
                                     elem_id="seed")  # fmt: skip
                trunc = gr.Slider(0.0, 1.5, value=truncation, step=0.05, label="truncation",
                                  elem_id="truncation")  # fmt: skip
                klass = gr.Dropdown(
                    choices=[("drawn with the seed", "")]
                    + [(str(c), str(c)) for c in range(studio.generator.num_classes)],
                    value="",
                    label="class",
                    visible=conditional,
                    elem_id="class",
                )
                sliders = [
                    gr.Slider(-s.limit, s.limit, value=0.0, step=s.step, elem_id=f"dir-{i}",
                              label=s.label + (" (x amplitude)" if s.relative else " (absolute)"))
                    for i, s in enumerate(studio.sliders)
                ]  # fmt: skip
                with gr.Row():
                    undo = gr.Button("Undo", elem_id="undo")
                    reset = gr.Button("Reset", elem_id="reset")
                photo = gr.File(label="photo to edit (projected into W+)", type="filepath",
                                elem_id="photo")  # fmt: skip
                recipe_in = gr.File(label="load a recipe (.json)", type="filepath",
                                    elem_id="recipe-in")  # fmt: skip
            with gr.Column(scale=2):
                with gr.Row():
                    original = gr.Image(label="original", format="png", type="numpy", height=300,
                                        interactive=False, elem_id="original")  # fmt: skip
                    edited = gr.Image(label="edited", format="png", type="numpy", height=300,
                                      interactive=False, elem_id="edited")  # fmt: skip
                status = gr.Markdown(elem_id="status")
                with gr.Row():
                    exports = {
                        kind: gr.Button(
                            f"Export {kind.upper() if kind != 'recipe' else 'recipe'}",
                            elem_id=f"export-{kind}",
                        )  # fmt: skip
                        for kind in ("png", "gif", "mp4", "recipe")
                    }
                exported = gr.File(label="exported file", interactive=False, elem_id="exported")

        controls = [seed_box, trunc, klass, *sliders]
        views = [history, original, edited, status]

        def show(hist: History, previous: EditState | None) -> tuple:
            s = hist.current
            same_input = previous is not None and _input_key(previous) == _input_key(s)
            before = gr.update() if same_input else studio.render(s, original=True)
            return hist, before, studio.render(s), _status(studio, s)

        def values_of(s: EditState) -> list:
            label = "" if s.label is None else str(s.label)
            return [s.seed, s.truncation, label, *s.values]

        @_guard
        def on_edit(hist: History, seed_v, trunc_v, class_v, *values) -> tuple:
            cur = hist.current
            new = studio.update(cur, values, seed_v, trunc_v, class_v if conditional else "keep")
            return show(hist.push(new), cur)

        gr.on(
            [c.input for c in controls], on_edit, [history, *controls], views,
            trigger_mode="always_last", show_progress="hidden", api_name="edit",
        )  # fmt: skip

        for button, step in ((undo, History.undo), (reset, History.reset)):

            @_guard
            def on_step(hist: History, step: Callable[[History], History] = step) -> tuple:
                new = step(hist)  # the controls follow the state shown
                return (*show(new, hist.current), *values_of(new.current))

            button.click(on_step, [history], [*views, *controls], api_name=button.elem_id,
                         show_progress="hidden")  # fmt: skip

        @_guard
        def on_photo(hist: History, path: str | None, progress=_PROGRESS) -> tuple:
            if not path:
                return (gr.update(),) * 5
            cur = hist.current
            return (*show(hist.push(studio.project_photo(path, cur)), cur), None)  # upload cleared

        photo.upload(on_photo, [history, photo], [*views, photo], api_name="photo")

        @_guard
        def on_recipe(hist: History, path: str | None) -> tuple:
            if not path:
                return (gr.update(),) * (5 + len(controls))
            new = studio.load_recipe(path)
            return (*show(hist.push(new), hist.current), *values_of(new), None)

        recipe_in.upload(
            on_recipe, [history, recipe_in], [*views, *controls, recipe_in], api_name="recipe"
        )

        for kind, button in exports.items():

            def on_export(hist: History, kind: str = kind) -> tuple:
                try:
                    path = studio.export(hist.current, kind)
                except StudioError as exc:
                    raise _error(exc) from None
                return str(path), f"exported {path}"

            button.click(on_export, [history], [exported, status], api_name=f"export_{kind}")

        app.load(lambda h: show(h, None), [history], views, show_progress="hidden")
    return app


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (for tests and ``--port 0``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def launch(
    studio: Studio,
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    block: bool = True,
    seed: int = 0,
    truncation: float = 0.7,
) -> gr.Blocks:
    """Serve the studio on ``host:port`` (``127.0.0.1``: this machine only). ``block=False``
    returns the running app at once (``app.close()`` stops it)."""
    app = build_app(studio, seed, truncation)
    app.queue(default_concurrency_limit=1)
    studio.export_dir.mkdir(parents=True, exist_ok=True)
    app.launch(
        server_name=host,
        server_port=port or free_port(host),
        prevent_thread_lock=not block,
        quiet=True,
        show_error=True,
        ssr_mode=False,
        allowed_paths=[str(studio.export_dir.resolve())],
        footer_links=[],
        css=CSS,
    )
    return app

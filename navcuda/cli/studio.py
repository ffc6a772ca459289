"""``navcuda studio``: serve the interactive editor (:mod:`navcuda.studio`) on this machine."""

from __future__ import annotations

import argparse
import sys

from navcuda.cli.options import (
    HelpFormatter,
    check_writable,
    count,
    device_name,
    finite,
    generator_options,
    load_generator_of,
    metric_of,
    non_negative,
    port_number,
)

__all__ = ["add_studio_parser", "cmd_studio"]


def add_studio_parser(sub) -> None:
    """Add the ``studio`` command to the subparsers ``sub``."""
    p = sub.add_parser(
        "studio",
        formatter_class=HelpFormatter,
        help="interactive editor in the browser: a slider per direction, photos, exports",
        description="Serve a local web app (Gradio; pip install 'navcuda[studio]'): one slider "
        "per direction of the given sets (default: the bundled named set), seed, truncation and "
        "class, photo upload (projected into W+), undo/reset, original and edited side by side, "
        "exports of PNG, GIF/MP4 of the edit's sweep and its recipe (navcuda edit --recipe "
        "reproduces it).",
    )
    p.add_argument("directions", nargs="*", help="direction set files (.nav)")
    p.add_argument("--checkpoint", help="generator file; default: the embedded model")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (this machine only)")
    p.add_argument("--port", type=port_number, default=7860, help="port (0: any free one)")
    p.add_argument("--seed", type=non_negative, default=0, help="the first sample")
    p.add_argument("--truncation", type=finite, default=0.7, help="truncation psi")
    p.add_argument("--steps", type=count, default=200, help="projection steps of uploaded photos")
    p.add_argument("--metric", default="auto", help="projection metric (as navcuda edit)")
    p.add_argument("--backbone", help="LPIPS backbone file (vgg16-397923af.pth)")
    p.add_argument("--export-dir", default="studio-exports", help="where exports are written")
    p.add_argument("--allow-other-model", action="store_true", help="skip the model check")
    p.add_argument("--device", type=device_name, default="cpu", help="cpu or cuda")
    generator_options(p, label=False)
    p.set_defaults(func=cmd_studio)


def cmd_studio(args: argparse.Namespace) -> int:
    from navcuda.cli.edit import _model_source
    from navcuda.recipe import DirectionSource

    check_writable(args.export_dir, "dir")
    try:
        from navcuda.studio.app import launch
    except ImportError as exc:
        raise ValueError(
            f"the studio needs Gradio ({exc}); install it with pip install 'navcuda[studio]'"
        ) from None
    from navcuda.studio import Studio

    if args.directions:
        sources = [DirectionSource.from_file(p) for p in args.directions]
    elif args.checkpoint or args.model:
        raise ValueError("give the direction sets (.nav) of this model")
    else:
        sources = [DirectionSource.bundled()]
    g = load_generator_of(args)
    for src in sources:
        src.directions.check_compatible(g, allow_other_model=args.allow_other_model)
    studio = Studio(
        g,
        sources,
        args.export_dir,
        model_source=_model_source(args),
        projection_steps=args.steps,
        metric=metric_of(args.metric, g, args.backbone, args.device),
    )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"navcuda studio: warning: listening on {args.host}: reachable from other machines",
              file=sys.stderr)  # fmt: skip
    print(f"navcuda studio: http://{args.host}:{args.port or '(a free port)'}/ (Ctrl+C stops it)")
    launch(studio, args.host, args.port, seed=args.seed, truncation=args.truncation)
    return 0

"""The ``navcuda`` commands that discover, render, browse, name, edit and train (``evaluate`` is
in :mod:`navcuda.cli.evaluate`): each parses nothing itself, calls the API, writes files and
says where they went."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from navcuda.cli.options import (
    OWN_OPTIONS,
    check_render_cost,
    check_writable,
    fmt,
    label_of,
    load_generator_of,
    parse_hparams,
    warn_large_shifts,
)
from navcuda.distributed import from_rank0


def cmd_info(args: argparse.Namespace) -> int:
    import navcuda
    from navcuda.models.layers import list_layers

    if (args.build or args.selftest) and args.checkpoint:
        raise ValueError("--build and --selftest concern this install, not a checkpoint: drop one")
    if args.build:
        print(json.dumps(navcuda.build_info(), indent=2, default=str))
        return 0
    if args.selftest:
        results = navcuda.selftest(args.device)
        for r in results:
            err = "" if r.worst_error is None else f"worst relative error {r.worst_error:.2e}"
            print(f"{r.op:<20} {r.device:<6} {r.status.upper():<5} {err} {r.detail}".rstrip())
        return 0 if all(r.status != "fail" for r in results) else 1
    g = load_generator_of(args, "cpu")
    n_params = sum(p.numel() for p in g.parameters())
    print(f"generator: {args.model or args.checkpoint or 'embedded default'} ({g.architecture})")
    cfg = getattr(g, "config", None)
    if hasattr(cfg, "n_mlp"):
        print(
            f"  resolution {cfg.resolution}, z_dim {cfg.z_dim}, w_dim {cfg.w_dim}, mapping depth "
            f"{cfg.n_mlp}, num_ws {cfg.num_ws}, {n_params / 1e6:.2f} M parameters"
        )
    else:
        print(f"  images {list(g.image_shape)}, {n_params / 1e6:.2f} M parameters")
    print("  ix  name        kind         res  weight [out, in, kh, kw]")
    for info in list_layers(g):
        print("  " + info.describe())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from navcuda.discover import discover
    from navcuda.rendering import render

    out = check_writable(args.output, "dir")
    _ignore_in_git(out)
    g = load_generator_of(args)
    k = _capped_k(args, g, "svd")
    ds = discover(g, args.layer, method="svd", k=k, seed=args.seed, label=label_of(args))
    warn_large_shifts(args, g, ds, args.t, relative=True)
    res = render(g, ds, args.seeds, ts=args.t, output_dir=out, gif=True, label=label_of(args))
    ds.save(out / "directions.nav")
    print(
        f"wrote {len(ds)} strips of layer {ds.layer} "
        f"(rows: seeds {args.seeds[0]}..{args.seeds[-1]}, "
        f"columns: t = {fmt(args.t)} x the recommended amplitude) and GIFs to {out}/ "
        f"({len(res.files)} files) and the directions to {out / 'directions.nav'}"
    )
    if args.checkpoint is None and getattr(args, "model", None) is None:
        from navcuda.models.default import load_default_directions

        named = load_default_directions()
        warn_large_shifts(args, g, named, args.t, relative=True)
        res = render(
            g, named, args.seeds, ts=args.t, output_dir=out / "named", gif=True, labels=True
        )
        print(
            f"and the bundled named edits ({', '.join(n or '' for n in named.names)}; each clean "
            f"at t = +-2) to {out / 'named'}/ ({len(res.files)} files)"
        )
    return 0


def _ignore_in_git(folder: Path) -> None:
    """Make ``folder`` (created here if missing) ignored by git, as ``python -m venv`` does for
    its folder: a ``.gitignore`` holding ``*``, unless the folder already has one, so that the
    demo's output run inside a repository is never committed by accident."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / ".gitignore"
    if not marker.exists():
        marker.write_text("# written by navcuda demo: its output is not meant for git\n*\n")


def cmd_discover(args: argparse.Namespace) -> int:
    from navcuda.discover import discover
    from navcuda.discover.params import check_params, describe

    if args.list_params:
        print(describe(args.method))
        return 0
    from_rank0(lambda: check_writable(args.output, "file"))  # rank 0 writes (torchrun)
    hparams = dict(parse_hparams(args.param))
    if label_of(args) is not None:
        hparams["label"] = label_of(args)
    metric = {"metric": args.metric, "backbone_path": args.backbone}
    if args.memory_budget is not None:
        metric["memory_budget"] = args.memory_budget
    if args.method == "spectrum":
        hparams = {**metric, **hparams}
    elif args.method == "hybrid":
        spectrum = {k.removeprefix("spectrum_"): v for k, v in hparams.items()
                    if k.startswith("spectrum_")}  # fmt: skip
        hparams = {k: v for k, v in hparams.items() if not k.startswith("spectrum_")}
        hparams["spectrum_params"] = {**metric, **spectrum}
        if label_of(args) is not None:
            hparams["spectrum_params"]["label"] = label_of(args)
        if args.eigenvectors:
            hparams["eigenvectors"] = args.eigenvectors
    elif args.eigenvectors:
        raise ValueError("--eigenvectors is for --method hybrid")
    # every --param checked against the method's table before the generator is even loaded
    hparams = check_params(args.method, hparams, exclude=OWN_OPTIONS)
    check_params(args.method, {"k": args.k, "seed": args.seed})  # e.g. optimize: k >= 2
    g = load_generator_of(args)
    k = _capped_k(args, g, args.method)
    ds = discover(g, args.layer, method=args.method, k=k, seed=args.seed, **hparams)
    path = from_rank0(lambda: ds.save(args.output))
    print(f"wrote {len(ds)} {args.method} directions of layer {ds.layer} to {path}")
    if ds.values is not None and args.method == "spectrum":
        res = ds.extra.get("residuals") or []
        print(
            f"eigenvalues {float(ds.values[0]):.4g} ... {float(ds.values[-1]):.4g} (metric "
            f"{ds.metric}); max residual {max(res):.2e} after {ds.extra.get('iterations')} "
            f"iterations ({'converged' if ds.extra.get('converged') else 'NOT converged'})"
        )
    return 0


def _capped_k(args: argparse.Namespace, g, method: str) -> int:
    """``-k``, or what ``method`` can find at most in ``--layer`` when that is fewer (said in a
    note: the API's :class:`~navcuda.discover.FewerDirectionsWarning` says it otherwise)."""
    from navcuda.discover import max_directions

    bound = max_directions(g, args.layer, method)
    if bound is None or args.k <= bound[0]:
        return args.k
    k, what = bound
    where = "the latent" if method in ("ganspace", "sefa") else g.layer(args.layer).name
    print(
        f"navcuda {args.command}: note: -k {args.k} is more than {method} can find in {where} "
        f"({what} is {k}): discovering {k}",
        file=sys.stderr,
    )
    return k


def _measure(sizes: tuple[int, ...]) -> bool:
    """Whether a render of ``sizes`` (directions, seeds, shifts) is large enough to time a batch
    for its estimate (smaller ones take seconds)."""
    return sizes[0] * sizes[1] * sizes[2] > 256


def cmd_render(args: argparse.Namespace) -> int:
    from navcuda.io.directions import DirectionSet
    from navcuda.rendering import estimate_render, render

    check_writable(args.output, "dir")
    if args.video:
        from navcuda.video import check_video_support

        check_video_support()
    ds = DirectionSet.load(args.directions)
    g = load_generator_of(args)
    ds.check_compatible(g, allow_other_model=args.allow_other_model)
    if args.only:
        ds = ds.subset(args.only)
    warn_large_shifts(args, g, ds, args.t, relative=not args.absolute)
    n = (len(ds), len(args.seeds), len(args.t))
    check_render_cost(
        args,
        estimate_render(
            g, *n, output_dir=args.output, gif=args.gif, video=args.video, measure=_measure(n)
        ),
    )
    res = render(
        g,
        ds,
        args.seeds,
        ts=args.t,
        relative=not args.absolute,
        output_dir=args.output,
        gif=args.gif,
        truncation_psi=args.truncation,
        label=label_of(args),
        labels=args.labels,
        video=args.video,
    )
    print(f"wrote {len(res.files)} files for {len(ds)} directions to {args.output}/")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from navcuda.models.default import TOY_CONFIG
    from navcuda.models.stylegan2 import GeneratorConfig
    from navcuda.toyworld import ToyWorld
    from navcuda.training import TrainConfig, Trainer, export_generator

    torch.set_flush_denormal(True)
    out = check_writable(args.output, "dir")
    if args.export:
        check_writable(args.export, "file")
    ckpt = out / "checkpoint.pt"
    world = ToyWorld(resolution=args.resolution)

    def sampler(n: int, gen: torch.Generator) -> torch.Tensor:
        return world.sample(n, gen)[0]

    if args.export:
        path = export_generator(
            ckpt, args.export, extra={"world": "toyfaces", "command": "navcuda train"}
        )
        print(f"exported the EMA generator of {ckpt} to {path}")
        return 0
    if ckpt.is_file() and not args.restart:
        trainer = Trainer.resume(ckpt, sampler, device=args.device)
        print(f"resuming {ckpt} at step {trainer.step}")
    else:
        cmap = {r: c for r, c in TOY_CONFIG.channel_map.items() if r <= args.resolution}
        cfg = GeneratorConfig(
            resolution=args.resolution,
            z_dim=TOY_CONFIG.z_dim,
            w_dim=TOY_CONFIG.w_dim,
            n_mlp=TOY_CONFIG.n_mlp,
            channel_map=cmap,
        )
        tc = TrainConfig(
            batch_size=args.batch_size,
            seed=args.seed,
            kernel_decay=args.kernel_decay,
            kernel_init=args.kernel_init,
        )
        trainer = Trainer(cfg, sampler, tc, device=args.device)
    trainer.run(
        steps=args.steps,
        max_seconds=None if args.minutes is None else args.minutes * 60,
        checkpoint_path=ckpt,
        sample_dir=out / "samples",
        sample_every=args.sample_every,
    )
    samples = out / "samples"
    where = (
        f"samples in {samples}/"
        if samples.is_dir() and any(samples.iterdir())
        else f"no samples yet (one every {args.sample_every} steps)"
    )
    print(f"step {trainer.step}: checkpoint {ckpt}, {where}")
    return 0


def cmd_gallery(args: argparse.Namespace) -> int:
    from navcuda.gallery import build_gallery, estimate_gallery
    from navcuda.io.directions import DirectionSet

    check_writable(args.output, "dir")
    if args.serve:
        _check_port(args.port)
    ds = DirectionSet.load(args.directions)
    g = load_generator_of(args)
    ds.check_compatible(g, allow_other_model=args.allow_other_model)
    warn_large_shifts(args, g, ds, args.t, relative=not args.absolute)
    n = (len(ds), len(args.seeds), len(args.t))
    check_render_cost(args, estimate_gallery(g, *n, measure=_measure(n)))
    scores = None
    if args.scores:
        try:
            scores = json.loads(Path(args.scores).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read scores {args.scores}: {exc}") from exc
        if isinstance(scores, dict):
            scores = scores.get("scores", scores)
    index = build_gallery(
        g,
        ds,
        args.output,
        seeds=args.seeds,
        ts=args.t,
        scores=scores,
        relative=not args.absolute,
        truncation_psi=args.truncation,
        source=args.directions,
        progress=True,
        label=label_of(args),
    )
    print(f"wrote the gallery of {len(ds)} directions to {index}")
    if args.serve:
        _serve(index.parent, args.port)
    return 0


def _check_port(port: int) -> None:
    """Refuse, before rendering, a --serve port that cannot be bound now (0: any free port)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ValueError(
                f"cannot serve on 127.0.0.1:{port}: {exc.strerror or exc}; pick another --port "
                "(0: any free one)"
            ) from None


def _serve(folder: Path, port: int) -> None:
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        print(
            f"serving {folder} at http://127.0.0.1:{server.server_address[1]}/ "
            "(local only; Ctrl-C to stop)",
            flush=True,
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopped")


def cmd_name(args: argparse.Namespace) -> int:
    from navcuda.gallery import apply_names
    from navcuda.io.directions import DirectionSet

    if args.auto + args.fit + (args.names is not None) != 1:
        raise ValueError("give one of a names.json file, --auto or --fit")
    check_writable(args.output or args.directions, "file")
    ds = DirectionSet.load(args.directions)
    n_in = len(ds)
    if args.fit:
        return _fit_names(args, ds)
    if args.auto:
        from navcuda.discover.naming import name_by_factors

        g = load_generator_of(args)
        ds.check_compatible(g, allow_other_model=args.allow_other_model)
        ds = name_by_factors(
            g,
            ds,
            min_disentanglement=args.min_disentanglement,
            n_samples=args.samples or 16,
            seed=args.seed,
            keep_unnamed=args.keep_unnamed,
            progress=True,
        )
        scores = ds.extra["factor_scores"]
        for n, info in zip(ds.names, scores, strict=True):
            tag = ""
            if not info["named"]:
                factor = info["top_factor"].replace("_", " ")
                why = (
                    "below --min-disentanglement"
                    if info["disentanglement"] < args.min_disentanglement
                    else "a more disentangled direction has it"
                )
                tag = f"   (top factor {factor}: {why})"
            print(f"  {n or '-':<20} disentanglement {info['disentanglement']:.2f}{tag}")
        by_factor = sum(info["named"] for info in scores)
        rest = n_in - by_factor
        what = "kept under their names" if args.keep_unnamed else "dropped (--keep-unnamed keeps)"
        print(f"{by_factor} of {n_in} directions named after a factor, {rest} {what}")
        print(f"wrote {ds.save(args.output or args.directions)}")
        return 0
    ds = apply_names(ds, args.names, allow_other_set=args.allow_other_set)
    path = ds.save(args.output or args.directions)
    marks = list((ds.extra.get("marks") or {}).values())
    named = sum(n is not None for n in ds.names)
    print(
        f"{named} of {len(ds)} directions named, {marks.count('good')} marked good, "
        f"{marks.count('bad')} bad; wrote {path}"
    )
    return 0


def _fit_names(args: argparse.Namespace, ds) -> int:
    """``navcuda name --fit``: per factor, the combination of the set's directions that moves it
    alone, kept when clean at t = +-2 (:func:`~navcuda.evaluate.named_edits.build_clean_named_set`).
    """
    from navcuda.evaluate.named_edits import build_clean_named_set
    from navcuda.models.default import is_toy_model

    g = load_generator_of(args)
    if not is_toy_model(g):
        raise ValueError(
            "--fit measures the toy world's factors: use a toy-world generator (the bundled "
            "model, or one trained with navcuda train)"
        )
    ds.check_compatible(g, allow_other_model=args.allow_other_model)
    out, report = build_clean_named_set(
        g, [ds], n_samples=args.samples or 256, seed=args.seed, factors=args.factors
    )
    for name, info in report["factors"].items():
        if name.replace("_", " ") in out.names:
            why = f"clean shift {info['clean_shift']:.4g} (margin {info['margin']:.2f})"
        elif info["clean_shift"] is not None:
            why = f"clean, but with too little margin ({info['margin']:.2f})"
        else:
            why = "no clean combination"
        print(f"  {name.replace('_', ' '):<16} {why}")
    print(f"{len(out)} of {len(report['factors'])} factors have a clean combination of the "
          f"{len(ds)} directions (each clean at t = +-2)")  # fmt: skip
    print(f"wrote {out.save(args.output or args.directions)}")
    return 0

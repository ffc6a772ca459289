"""The ``navcuda`` command line: thin over the Python API (parse, call, write files, say where).

Commands:
  navcuda info [CHECKPOINT]          build details and every conv layer of a generator
  navcuda demo -o DIR                strips of the top singular directions of the default layer
  navcuda discover --method M -o F   find directions and save them as a direction set
  navcuda render F -o DIR            strips / GIFs of a direction set
  navcuda gallery F -o DIR           a static HTML page to browse, name and mark directions
  navcuda name F names.json          merge names exported from the gallery into a set
  navcuda edit IMAGE --direction D   project an image (or --seed S) and apply a named edit
  navcuda evaluate EXP F -o DIR      the paper's experiments (locality, reproduce, ...)
  navcuda train -o DIR               train the toy-world generator (resumable)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["main", "parse_seeds", "parse_range"]


def parse_seeds(text: str) -> list[int]:
    """``"0-7"`` -> ``[0..7]``; ``"1,5,9"`` -> ``[1, 5, 9]``; mixed: ``"0-2,10"``."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad seed list {text!r}: use e.g. '0-7', '1,5,9' or '0-2,10'"
        ) from None
    if any(s < 0 or s >= 2**63 for s in seeds):
        raise argparse.ArgumentTypeError(f"seeds must lie in [0, 2**63), got {text!r}")
    return seeds


def parse_range(text: str) -> list[float]:
    """``"-3:3:7"`` -> 7 values from -3 to 3; ``"-1,0,2"`` -> those values."""
    try:
        if ":" in text:
            a, b, n = text.split(":")
            steps = int(n)
            if steps < 1:
                raise ValueError
            return torch.linspace(float(a), float(b), steps).tolist()
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad range {text!r}: use START:STOP:COUNT (e.g. -3:3:7) or a comma list"
        ) from None


def _number(text: str, what: str, ok, kind=float):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if (kind is float and not math.isfinite(value)) or not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _finite(text: str) -> float:
    return _number(text, "a finite number", lambda v: True)


def _positive(text: str) -> float:
    return _number(text, "a finite number > 0", lambda v: v > 0)


def _fraction(text: str) -> float:
    return _number(text, "a number in [0, 1]", lambda v: 0 <= v <= 1)


def _count(text: str) -> int:
    return _number(text, "an integer >= 1", lambda v: v >= 1, int)


def _non_negative(text: str) -> int:
    return _number(text, "an integer >= 0", lambda v: 0 <= v < 2**63, int)


def _port(text: str) -> int:
    return _number(text, "a port number in [0, 65535]", lambda v: 0 <= v <= 65535, int)


def _device(text: str) -> str:
    """``--device``: a torch device that exists here (checked before any work starts)."""
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: use cpu or cuda[:N]") from None
    if dev.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"unsupported device {text!r}: use cpu or cuda[:N]")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(
                f"{text!r}: no CUDA device is available here (torch.cuda.is_available() is "
                "False); use --device cpu"
            )
        if dev.index is not None and dev.index >= count:
            raise argparse.ArgumentTypeError(f"{text!r}: only {count} CUDA device(s) here")
    return text


def _check_writable(path: str | os.PathLike, kind: str) -> Path:
    """Refuse, before any work, an output that cannot be written: a ``kind="file"`` that is a
    folder, a ``kind="dir"`` that is a file, a parent that is a file, or no write permission
    in the nearest existing folder (missing folders are created later)."""
    p = Path(path)
    if kind == "file" and (str(path) in ("", ".") or p.is_dir()):
        raise ValueError(f"cannot write {str(path)!r}: it is a folder; give a file name")
    if kind == "dir" and p.exists() and not p.is_dir():
        raise ValueError(f"cannot write into {str(path)!r}: it is a file, not a folder")
    from navcuda.io.atomic import nearest_existing

    folder = nearest_existing(p.parent if kind == "file" else p)
    if not folder.is_dir():
        raise ValueError(f"cannot write {str(path)!r}: {str(folder)!r} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {str(path)!r}: no write permission in {str(folder)!r}")
    return p


def _load(args: argparse.Namespace, device: str | None = None):
    """The generator of a command: ``--model package.module:factory`` (given ``--checkpoint``,
    if any), a checkpoint file, or the bundled model."""
    device = device or args.device
    spec = getattr(args, "model", None)
    if spec:
        from navcuda.models.from_spec import load_from_spec

        return load_from_spec(spec, args.checkpoint, device)
    if args.checkpoint is None:
        from navcuda.models.default import load_default

        return load_default(device=device)
    from navcuda.models.checkpoints import load_generator

    return load_generator(args.checkpoint, device=device).eval()


def _label(args: argparse.Namespace) -> int | None:
    """``--class``: the class label of a conditional generator (None: drawn with each latent)."""
    return getattr(args, "label", None)


def _cmd_info(args: argparse.Namespace) -> int:
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
    g = _load(args, "cpu")
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from navcuda.discover import discover
    from navcuda.rendering import render

    out = _check_writable(args.output, "dir")
    g = _load(args)
    ds = discover(g, args.layer, method="svd", k=args.k, seed=args.seed, label=_label(args))
    res = render(g, ds, args.seeds, ts=args.t, output_dir=out, gif=True, label=_label(args))
    ds.save(out / "directions.nav")
    print(
        f"wrote {len(ds)} strips of layer {ds.layer} "
        f"(rows: seeds {args.seeds[0]}..{args.seeds[-1]}, "
        f"columns: t = {_fmt(args.t)} x the recommended amplitude) and GIFs to {out}/ "
        f"({len(res.files)} files) and the directions to {out / 'directions.nav'}"
    )
    return 0


def _metric(name: str, g, backbone: str | None, device: str):
    """A perceptual metric by CLI name ("none" -> None); "auto" as in spectrum discovery."""
    if name == "none":
        return None
    from navcuda.metrics.perceptual import make_metric, resolve_metric_name
    from navcuda.models.default import is_toy_model

    name = resolve_metric_name(name, is_toy_model(g), backbone)
    kw = {"backbone_path": backbone} if name.startswith("lpips") else {}
    return make_metric(name, **kw).to(device)


def _fmt(values: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def _cmd_discover(args: argparse.Namespace) -> int:
    from navcuda.discover import discover

    _check_writable(args.output, "file")
    g = _load(args)
    hparams = dict(_parse_hparams(args.param))
    if _label(args) is not None:
        hparams["label"] = _label(args)
    metric = {"metric": args.metric, "backbone_path": args.backbone}
    if args.method == "spectrum":
        hparams = {**metric, **hparams}
    elif args.method == "hybrid":
        spectrum = {k.removeprefix("spectrum_"): v for k, v in hparams.items()
                    if k.startswith("spectrum_")}  # fmt: skip
        hparams = {k: v for k, v in hparams.items() if not k.startswith("spectrum_")}
        hparams["spectrum_params"] = {**metric, **spectrum}
        if _label(args) is not None:
            hparams["spectrum_params"]["label"] = _label(args)
        if args.eigenvectors:
            hparams["eigenvectors"] = args.eigenvectors
    elif args.eigenvectors:
        raise ValueError("--eigenvectors is for --method hybrid")
    ds = discover(g, args.layer, method=args.method, k=args.k, seed=args.seed, **hparams)
    path = ds.save(args.output)
    print(f"wrote {len(ds)} {args.method} directions of layer {ds.layer} to {path}")
    if ds.values is not None and args.method == "spectrum":
        res = ds.extra.get("residuals") or []
        print(
            f"eigenvalues {float(ds.values[0]):.4g} ... {float(ds.values[-1]):.4g} (metric "
            f"{ds.metric}); max residual {max(res):.2e} after {ds.extra.get('iterations')} "
            f"iterations ({'converged' if ds.extra.get('converged') else 'NOT converged'})"
        )
    return 0


def _parse_hparams(items: Sequence[str]) -> list[tuple[str, object]]:
    out = []
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--param expects NAME=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value: object = json.loads(raw)
        except json.JSONDecodeError:
            words = {"nan": math.nan, "inf": math.inf, "+inf": math.inf, "-inf": -math.inf}
            value = words.get(raw.strip().lower(), raw)
        out.append((key.strip().replace("-", "_"), value))
    return out


def _cmd_render(args: argparse.Namespace) -> int:
    from navcuda.io.directions import DirectionSet
    from navcuda.rendering import render

    _check_writable(args.output, "dir")
    ds = DirectionSet.load(args.directions)
    g = _load(args)
    ds.check_compatible(g, allow_other_model=args.allow_other_model)
    if args.only:
        ds = ds.subset(args.only)
    res = render(
        g,
        ds,
        args.seeds,
        ts=args.t,
        relative=not args.absolute,
        output_dir=args.output,
        gif=args.gif,
        truncation_psi=args.truncation,
        label=_label(args),
    )
    print(f"wrote {len(res.files)} files for {len(ds)} directions to {args.output}/")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from navcuda.models.default import TOY_CONFIG
    from navcuda.models.stylegan2 import GeneratorConfig
    from navcuda.toyworld import ToyWorld
    from navcuda.training import TrainConfig, Trainer, export_generator

    torch.set_flush_denormal(True)
    out = _check_writable(args.output, "dir")
    if args.export:
        _check_writable(args.export, "file")
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
        tc = TrainConfig(batch_size=args.batch_size, seed=args.seed)
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


def _cmd_gallery(args: argparse.Namespace) -> int:
    from navcuda.gallery import build_gallery
    from navcuda.io.directions import DirectionSet

    _check_writable(args.output, "dir")
    if args.serve:
        _check_port(args.port)
    ds = DirectionSet.load(args.directions)
    g = _load(args)
    ds.check_compatible(g, allow_other_model=args.allow_other_model)
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
        label=_label(args),
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


def _cmd_name(args: argparse.Namespace) -> int:
    from navcuda.gallery import apply_names
    from navcuda.io.directions import DirectionSet

    if args.auto == (args.names is not None):
        raise ValueError("give either a names.json file or --auto")
    _check_writable(args.output or args.directions, "file")
    ds = DirectionSet.load(args.directions)
    n_in = len(ds)
    if args.auto:
        from navcuda.discover.naming import name_by_factors

        g = _load(args)
        ds.check_compatible(g, allow_other_model=args.allow_other_model)
        ds = name_by_factors(
            g,
            ds,
            min_disentanglement=args.min_disentanglement,
            n_samples=args.samples,
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


def _cmd_edit(args: argparse.Namespace) -> int:
    from navcuda.io.directions import DirectionSet
    from navcuda.project import load_image, project, select_direction
    from navcuda.rendering import inputs_for, save_grid
    from navcuda.shift import synthesize_shifted

    if (args.image is None) == (args.seed is None):
        raise ValueError("give either an image to project or --seed S for a generated sample")
    _check_writable(args.output, "file")
    if args.save_projection:
        _check_writable(args.save_projection, "file")
    if args.directions is None:
        if args.checkpoint is not None:
            raise ValueError("--directions is required with --checkpoint")
        from navcuda.models.default import load_default_directions

        ds = load_default_directions()
    else:
        ds = DirectionSet.load(args.directions)
    g = _load(args)
    ds.check_compatible(g, allow_other_model=args.allow_other_model)
    d = select_direction(ds, args.direction)
    scale = 1.0 if args.absolute or not d.amplitude else d.amplitude
    t = args.t * scale
    out = Path(args.output)
    if args.image is not None:
        channels, height, _ = g.image_shape
        target = load_image(args.image, height, channels)
        proj = project(
            g,
            target,
            steps=args.steps,
            mode=args.mode,
            seed=args.projection_seed,
            metric=_metric(args.metric, g, args.backbone, args.device),
            progress=True,
        )
        edited = proj.render(g, d, t)
        panels = torch.cat([target.to(edited.device), proj.image, edited]).float().cpu()
        what = "input | reconstruction | edited"
        if args.save_projection:
            from navcuda.io.atomic import atomic_path

            with atomic_path(args.save_projection) as tmp:
                torch.save(
                    {"ws": proj.ws.cpu(), "noise": {k: v.cpu() for k, v in proj.noise.items()}},
                    tmp,
                )
    else:
        with torch.no_grad():
            inputs = inputs_for(g, [args.seed], args.truncation, _label(args))
            original = synthesize_shifted(g, inputs)
            edited = synthesize_shifted(g, inputs, d, t)
        panels = torch.cat([original, edited]).float().cpu()
        what = f"seed {args.seed} | edited"
    path = save_grid(panels, out, nrow=panels.shape[0])
    amp = "" if args.absolute or not d.amplitude else f" = {args.t:g} x amplitude {d.amplitude:.4g}"
    print(f"direction {d.name!r}, t = {t:.4g}{amp}; wrote {what} to {path}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from navcuda.io.directions import DirectionSet

    _check_writable(args.output, "dir")
    g = _load(args)
    ds = None
    if args.experiment in ("locality", "reproduce", "realism"):
        if args.directions is None:
            raise ValueError(f"evaluate {args.experiment} needs a direction set file (.nav)")
        ds = DirectionSet.load(args.directions)
        ds.check_compatible(g, allow_other_model=args.allow_other_model)
        if args.only:
            ds = ds.subset(args.only)
    elif args.directions is not None:
        raise ValueError(
            f"evaluate {args.experiment} takes no direction set (use --set LABEL=FILE)"
        )
    out = Path(args.output)
    report = EXPERIMENTS[args.experiment](g, ds, out, args)
    path = _write_json(out / f"{args.experiment}.json", report)
    print(f"wrote {path} and the figures beside it")
    return 0


def _write_json(path: Path, obj: object) -> Path:
    from navcuda.io.atomic import atomic_path

    with atomic_path(path) as tmp:  # NaN (no value) as null: strict JSON for every reader
        tmp.write_text(json.dumps(_nan_to_none(obj), indent=2, allow_nan=False))
    return path


def _nan_to_none(obj: object) -> object:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def _eval_locality(g, ds, out: Path, args: argparse.Namespace) -> dict:
    from navcuda.evaluate.locality import locality_map, save_heatmaps

    results = [
        locality_map(
            g, d, n_z=args.n_z, n_t=args.n_t, seed=args.seed, progress=True, label=_label(args)
        )
        for d in ds
    ]
    save_heatmaps(results, out / "locality.png")
    return {
        "experiment": "locality",
        "set": str(args.directions),
        "n_z": args.n_z,
        "n_t": args.n_t,
        "directions": [{"name": r.name, "score": r.score, "t_max": r.t_max} for r in results],
    }


def _eval_reproduce(g, ds, out: Path, args: argparse.Namespace) -> dict:
    from navcuda.evaluate.latent_reproduction import plot_reproduction, reproduce_edit, spaces_for

    metric = _metric(args.metric, g, args.backbone, args.device)
    rows = []
    for d in ds:
        t = args.t_rel * (d.amplitude or 1.0)
        for space in spaces_for(g, d):
            r = reproduce_edit(g, d, t, space, n_z=args.n_z, steps=args.steps, seed=args.seed,
                               metric=metric, progress=True, label=_label(args))  # fmt: skip
            rows.append(
                {
                    "direction": d.name,
                    "space": space,
                    "t": t,
                    "relative_residual": r.relative_residual,
                    "unreachable": r.unreachable,
                }
            )
            print(f"{d.name:<16} {space:<12} residual {r.relative_residual:.3f}")
    plot_reproduction(rows, out / "reproduce.png", threshold=0.5)
    return {"experiment": "reproduce", "threshold": 0.5, "rows": rows,
            "metric": "pixel MSE" if metric is None else metric.describe()}  # fmt: skip


def _require_toy_model(g, what: str) -> None:
    from navcuda.models.default import is_toy_model

    if not is_toy_model(g):
        raise ValueError(f"{what} scores the toy world's factors: use the bundled model")


def _eval_realism(g, ds, out: Path, args: argparse.Namespace) -> dict:
    from navcuda.evaluate.realism import plot_realism, realism_curves
    from navcuda.io.directions import DirectionSet

    dirs = [d for d in ds]
    for d in dirs:
        d.meta.setdefault("method", ds.method)
    for path in args.baseline or []:
        b = DirectionSet.load(path)
        b.check_compatible(g, allow_other_model=args.allow_other_model)
        for d in b:
            d.meta.setdefault("method", b.method)
            dirs.append(d)
    if args.inception:
        from navcuda.metrics.frechet import InceptionFeatures, feature_statistics
        from navcuda.project import load_image

        if not args.real:
            raise ValueError("--inception needs --real DIR, a folder of real images")
        files = sorted(p for p in Path(args.real).iterdir() if p.suffix.lower() in
                       (".png", ".jpg", ".jpeg", ".webp"))  # fmt: skip
        if len(files) < 2:
            raise ValueError(f"--real {args.real}: found {len(files)} images, need at least 2")
        net = InceptionFeatures(args.inception).to(args.device)
        real = torch.cat([load_image(f, 299) for f in files])
        stats = feature_statistics(
            torch.cat([net(c.to(args.device)).cpu() for c in real.split(32)])
        )
        feature_fn, metric = net, "FID (Inception-v3, torchvision weights)"
    else:
        from navcuda.metrics.factor_regressor import load_factor_regressor
        from navcuda.metrics.frechet import world_statistics
        from navcuda.models.default import is_toy_model

        if not is_toy_model(g):
            raise ValueError(
                "toy-FD compares with toy-world renders and only makes sense for a toy-world "
                "model; for other models pass --inception FILE (torchvision Inception-v3 weights) "
                "and --real DIR (a folder of real images)"
            )
        reg = load_factor_regressor()
        stats = world_statistics(args.n_real, args.seed, reg)
        feature_fn, metric = reg.features, "toy-FD"
    ts = args.t or [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]
    curves = realism_curves(g, dirs, stats, feature_fn, relative_ts=ts, n_samples=args.n_z,
                            seed=args.seed, label=_label(args))  # fmt: skip
    plot_realism(curves, out / "realism.png", title=f"{metric} vs shift", metric=metric)
    return {"experiment": "realism", "metric": metric, "n_samples": args.n_z,
            "curves": [c.to_dict() for c in curves]}  # fmt: skip


def _eval_layers(g, ds, out: Path, args: argparse.Namespace) -> dict:
    from navcuda.evaluate.layer_sweep import layer_sweep, plot_layer_sweep

    _require_toy_model(g, "the layer sweep")
    sweep = layer_sweep(g, method=args.method, k=args.k, n_samples=args.n_z, seed=args.seed,
                        threshold=args.threshold, **dict(_parse_hparams(args.param)))  # fmt: skip
    plot_layer_sweep(sweep, out / "layers.png")
    for r in sweep["layers"]:
        top = sorted(r["profile"].items(), key=lambda kv: -kv[1])[:3]
        print(
            f"{r['layer']:<8} {r['resolution']:>4}px  " + ", ".join(f"{f} {v:.2f}" for f, v in top)
        )
    return sweep


#: methods of the table and their small-budget settings for a CPU run (--param overrides them)
_TABLE_METHODS = ("svd", "spectrum", "optimize", "hybrid", "ganspace", "sefa")


def _stale_set(g, saved, method: str, args: argparse.Namespace) -> str | None:
    """What a saved table set was computed for, when that is not this run's layer and k
    (None when it matches)."""
    from navcuda.models.layers import get_layer

    want_layer = None if method in ("ganspace", "sefa") else get_layer(g, args.layer).name
    if len(saved) != args.k or (want_layer is not None and saved.layer != want_layer):
        return f"{saved.layer}, k={len(saved)} (this run: {want_layer or saved.layer}, k={args.k})"
    return None


def _eval_table(g, ds, out: Path, args: argparse.Namespace) -> dict:
    from navcuda.discover import discover
    from navcuda.evaluate.interpretability import (
        interpretability_table,
        plot_interpretability,
        table_markdown,
    )
    from navcuda.io.directions import DirectionSet

    _require_toy_model(g, "the table")
    given = {}
    for item in args.set or []:
        label, sep, file = item.partition("=")
        if not sep or not label.strip() or not file.strip():
            raise ValueError(f"--set expects LABEL=FILE (e.g. svd=dirs.nav), got {item!r}")
        given[label.strip()] = file.strip()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in _TABLE_METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(_TABLE_METHODS)}")
    extra = dict(_parse_hparams(args.param))
    budgets = {
        "spectrum": {"n_latents": args.spectrum_latents, "tol": 1e-2, "max_iters": 30},
        "optimize": {"steps": args.train_steps},
        "hybrid": {"steps": args.train_steps, "basis_size": args.k,
                   "spectrum_params": {"n_latents": args.spectrum_latents, "tol": 1e-2,
                                       "max_iters": 30}},
    }  # fmt: skip
    sets: dict[str, DirectionSet] = {}
    (out / "sets").mkdir(parents=True, exist_ok=True)
    for m in methods:
        if m in given:
            sets[m] = DirectionSet.load(given[m])
            continue
        path = out / "sets" / f"{m}.nav"
        if path.is_file() and not args.recompute:
            saved = DirectionSet.load(path)
            stale = _stale_set(g, saved, m, args)
            if stale is None:
                print(f"{m}: reusing {path}")
                sets[m] = saved
                continue
            print(f"{m}: {path} was computed for {stale}; recomputing")
        mine = {k.removeprefix(m + "."): v for k, v in extra.items() if k.startswith(m + ".")}
        hp = {**budgets.get(m, {}), **mine}
        if m == "hybrid" and "spectrum" in sets:
            hp.pop("spectrum_params", None)
            hp["eigenvectors"] = sets["spectrum"]
        layer = args.layer
        print(f"{m}: discovering {args.k} directions of {layer}")
        sets[m] = discover(g, layer, method=m, k=args.k, seed=args.seed, **hp)
        sets[m].save(path)
    for label in given:
        if label not in sets:
            sets[label] = DirectionSet.load(given[label])
    table = interpretability_table(g, sets, threshold=args.threshold, n_samples=args.n_z,
                                   realism_samples=args.n_real, seed=args.seed)  # fmt: skip
    md = table_markdown(table)
    from navcuda.io.atomic import atomic_path

    with atomic_path(out / "table.md") as tmp:
        tmp.write_text(md + "\n")
    plot_interpretability(table, out / "table.png")
    print(md)
    return table


EXPERIMENTS = {
    "locality": _eval_locality,
    "reproduce": _eval_reproduce,
    "realism": _eval_realism,
    "layers": _eval_layers,
    "table": _eval_table,
}


def _join_negative_values(argv: Sequence[str] | None) -> list[str]:
    """Let ``--t -3:3:7`` through argparse (which would take ``-3:3:7`` for an option)."""
    args = list(sys.argv[1:] if argv is None else argv)
    out: list[str] = []
    i = 0
    while i < len(args):
        if args[i] == "--t" and i + 1 < len(args) and re.match(r"^-[\d.]", args[i + 1]):
            out.append(f"--t={args[i + 1]}")
            i += 2
        else:
            out.append(args[i])
            i += 1
    return out


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, except for flags and options without one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def _generator_options(p: argparse.ArgumentParser, label: bool = True) -> None:
    """``--model`` (any generator through an importable factory) and ``--class``."""
    p.add_argument(
        "--model",
        metavar="PKG.MODULE:FACTORY",
        help="a generator made by an importable factory: it returns a navcuda generator, "
        "(module, sampler) or navcuda.wrap arguments; --checkpoint is passed to it",
    )
    if label:
        p.add_argument(
            "--class",
            dest="label",
            type=_non_negative,
            help="class label of a conditional generator (default: drawn with each latent)",
        )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="navcuda",
        description="Find and apply interpretable directions in the weights of a StyleGAN2 "
        "generator.",
    )
    from navcuda import __version__

    p.add_argument("--version", action="version", version=f"navcuda {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser(
        "info",
        formatter_class=_HelpFormatter,
        help="list the conv layers of a generator (or build details)",
    )
    info.add_argument("checkpoint", nargs="?", help="generator file (.pt, .pkl, .safetensors)")
    info.add_argument("--build", action="store_true", help="print build details as JSON")
    info.add_argument(
        "--selftest", action="store_true", help="check every native op against its reference"
    )
    info.add_argument(
        "--device", default=None, type=_device, help="device for --selftest (default: best)"
    )
    _generator_options(info, label=False)
    info.set_defaults(func=_cmd_info)

    demo = sub.add_parser(
        "demo",
        formatter_class=_HelpFormatter,
        help="render strips of the top singular directions of one layer",
        description="Render G(z) while shifting one layer's kernel along its top singular "
        "directions (the paper's SVD baseline): one PNG per direction, one row per seed.",
    )
    demo.add_argument("-o", "--output", default="navcuda-demo", help="output folder")
    demo.add_argument("--checkpoint", help="generator file; default: the embedded model")
    demo.add_argument("--layer", default="3", help="official index (3) or name (convs.3)")
    demo.add_argument("-k", type=int, default=8, help="number of singular directions")
    demo.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-3"), help="e.g. 0-3")
    demo.add_argument(
        "--t",
        type=parse_range,
        default=parse_range("-2:2:5"),
        help="shifts as multiples of each direction's recommended amplitude (START:STOP:COUNT)",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of the calibration latents")
    demo.add_argument("--device", type=_device, default="cpu", help="cpu or cuda")
    _generator_options(demo)
    demo.set_defaults(func=_cmd_demo)

    from navcuda.discover import METHODS

    disc = sub.add_parser(
        "discover",
        formatter_class=_HelpFormatter,
        help="find interpretable directions in one layer and save them",
        description="Find K directions in the weights of one conv layer (or, for the latent "
        "baselines, in W) and save them as a direction set (.nav). Methods: "
        + ", ".join(sorted(METHODS))
        + ". Method hyper-parameters go through --param NAME=VALUE (see the Python docstrings).",
    )
    disc.add_argument("--method", default="svd", choices=sorted(METHODS))
    disc.add_argument("--layer", default="3", help="official index (3) or name (convs.3)")
    disc.add_argument("-k", type=int, default=64, help="number of directions")
    disc.add_argument("-o", "--output", default="directions.nav", help="direction set file")
    disc.add_argument("--checkpoint", help="generator file; default: the embedded model")
    disc.add_argument("--seed", type=int, default=0)
    disc.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="method option, e.g. n_latents=64, solver=power, steps=2000; for hybrid, "
        "spectrum_NAME=VALUE goes to its spectrum run",
    )
    disc.add_argument(
        "--metric",
        default="auto",
        help="perceptual metric of spectrum/hybrid: auto (LPIPS-VGG when its backbone file is "
        "found, else an offline fallback, with a warning), lpips-vgg, lpips-alex, random-vgg, "
        "toy-regressor, pixel",
    )
    disc.add_argument("--backbone", help="LPIPS backbone file (vgg16-397923af.pth)")
    disc.add_argument("--eigenvectors", help="hybrid: spectrum set (.nav) or official .pt file")
    disc.add_argument("--device", type=_device, default="cpu", help="cpu or cuda")
    _generator_options(disc)
    disc.set_defaults(func=_cmd_discover)

    rend = sub.add_parser(
        "render",
        formatter_class=_HelpFormatter,
        help="render strips (and GIFs) of a direction set",
        description="One PNG per direction: rows are latents (seeds), columns are shifts t.",
    )
    rend.add_argument("directions", help="direction set file (.nav)")
    rend.add_argument("-o", "--output", default="strips", help="output folder")
    rend.add_argument("--checkpoint", help="generator file; default: the embedded model")
    rend.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-3"), help="e.g. 0-7")
    rend.add_argument(
        "--t",
        type=parse_range,
        default=parse_range("-2:2:5"),
        help="shifts: multiples of the recommended amplitude (or absolute with --absolute)",
    )
    rend.add_argument("--absolute", action="store_true", help="--t values are absolute norms")
    rend.add_argument("--only", type=parse_seeds, help="render only these direction indices")
    rend.add_argument("--gif", action="store_true", help="also write animated GIFs")
    rend.add_argument("--truncation", type=_finite, default=0.7, help="truncation psi")
    rend.add_argument("--allow-other-model", action="store_true", help="skip the model check")
    rend.add_argument("--device", type=_device, default="cpu", help="cpu or cuda")
    _generator_options(rend)
    rend.set_defaults(func=_cmd_render)

    gal = sub.add_parser(
        "gallery",
        formatter_class=_HelpFormatter,
        help="write a static HTML gallery of a direction set (sort, filter, name, mark)",
        description="Write index.html with one card per direction (strip over t, animated "
        "preview, method/layer/value/amplitude, optional scores) plus its images to a folder. "
        "The page names and marks directions and exports names.json for `navcuda name`.",
    )
    gal.add_argument("directions", help="direction set file (.nav)")
    gal.add_argument("-o", "--output", default="gallery", help="output folder")
    gal.add_argument("--checkpoint", help="generator file; default: the embedded model")
    gal.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-2"), help="e.g. 0-3")
    gal.add_argument(
        "--t",
        type=parse_range,
        default=parse_range("-2:2:5"),
        help="shifts: multiples of the recommended amplitude (or absolute with --absolute)",
    )
    gal.add_argument("--absolute", action="store_true", help="--t values are absolute norms")
    gal.add_argument(
        "--scores", help='JSON file: {"<index>": {"score name": value}} (or a list of dicts)'
    )
    gal.add_argument("--truncation", type=_finite, default=0.7, help="truncation psi")
    gal.add_argument("--serve", action="store_true", help="then serve it on 127.0.0.1")
    gal.add_argument("--port", type=_port, default=8000, help="port for --serve (0: any free)")
    gal.add_argument("--allow-other-model", action="store_true", help="skip the model check")
    gal.add_argument("--device", type=_device, default="cpu", help="cpu or cuda")
    _generator_options(gal)
    gal.set_defaults(func=_cmd_gallery)

    name = sub.add_parser(
        "name",
        formatter_class=_HelpFormatter,
        help="name directions: merge a gallery's names.json, or --auto from toy-world factors",
        description="With names.json: names go into the set's names, good/bad marks into "
        "extra['marks']. With --auto (toy-world models): each direction is scored with the "
        "factor regressor and named after the ground-truth factor it moves most when its "
        "disentanglement reaches --min-disentanglement (one direction per factor; positive t "
        "increases the factor); unnamed directions are dropped unless --keep-unnamed. Writes "
        "the set in place (atomically) unless -o is given.",
    )
    name.add_argument("directions", help="direction set file (.nav)")
    name.add_argument("names", nargs="?", help="names.json exported by the gallery")
    name.add_argument("-o", "--output", help="write the named set here instead")
    name.add_argument(
        "--allow-other-set", action="store_true", help="apply names exported for another set"
    )
    name.add_argument(
        "--allow-other-model", action="store_true", help="--auto: skip the model check"
    )
    name.add_argument("--auto", action="store_true", help="name from toy-world factor scores")
    name.add_argument("--min-disentanglement", type=_fraction, default=0.25, help="for --auto")
    name.add_argument("--samples", type=_count, default=16, help="latents per direction (--auto)")
    name.add_argument("--keep-unnamed", action="store_true", help="for --auto")
    name.add_argument("--seed", type=int, default=0, help="latent seed for --auto")
    name.add_argument("--checkpoint", help="generator (default: the bundled model)")
    name.add_argument("--device", type=_device, default="cpu", help="cpu or cuda")
    _generator_options(name)
    name.set_defaults(func=_cmd_name)

    edit = sub.add_parser(
        "edit",
        formatter_class=_HelpFormatter,
        help="apply a direction to a photo (projected into W+) or to a generated sample",
        description="With an image: project it (NVlabs-style optimisation), then write input | "
        "reconstruction | edited side by side. With --seed: write sample | edited.",
    )
    edit.add_argument("image", nargs="?", help="photo to project (PNG, JPEG, ...)")
    edit.add_argument(
        "--seed", type=_non_negative, help="edit the generated sample of this seed instead"
    )
    edit.add_argument(
        "--directions",
        help="direction set file (.nav); default: the bundled model's named set "
        "(eye size, nose length, mouth width, ...)",
    )
    edit.add_argument("--direction", required=True, help="direction name (any case) or index")
    edit.add_argument(
        "--t", type=float, default=1.0, help="shift: multiple of the recommended amplitude"
    )
    edit.add_argument("--absolute", action="store_true", help="--t is an absolute norm")
    edit.add_argument("-o", "--output", default="edit.png", help="output image")
    edit.add_argument("--checkpoint", help="generator file; default: the embedded model")
    edit.add_argument("--steps", type=int, default=500, help="projection steps")
    edit.add_argument("--mode", choices=["w", "w+"], default="w+", help="projection space")
    edit.add_argument("--projection-seed", type=int, default=0, help="seed of the projection")
    edit.add_argument("--save-projection", help="also save the projected ws and noise (.pt)")
    edit.add_argument(
        "--metric",
        default="auto",
        help="perceptual loss of the projection besides pixel MSE: auto (LPIPS-VGG when its "
        "backbone is found, else toy-regressor on the bundled model / random-vgg), lpips-vgg, "
        "random-vgg, toy-regressor, none",
    )
    edit.add_argument("--backbone", help="LPIPS backbone file (vgg16-397923af.pth)")
    edit.add_argument("--truncation", type=_finite, default=0.7, help="truncation psi (--seed)")
    edit.add_argument("--allow-other-model", action="store_true", help="skip the model check")
    edit.add_argument("--device", type=_device, default="cpu", help="cpu or cuda")
    _generator_options(edit)
    edit.set_defaults(func=_cmd_edit)

    ev = sub.add_parser(
        "evaluate",
        formatter_class=_HelpFormatter,
        help="run one of the paper's experiments (or the automatic Table 1)",
        description="Experiments: locality (per-pixel change maps and a locality score), "
        "reproduce (can a latent shift in Z, W, W+ or the activations imitate the edit?), "
        "realism (toy-FD, or FID with --inception/--real, against the shift), layers (factor "
        "profile of every layer's directions; no set needed), table (the paper's Table 1 "
        "measured on the toy world for svd, spectrum, optimize, hybrid, ganspace and sefa; no "
        "set needed). Each writes EXPERIMENT.json and a figure into the output folder.",
    )
    ev.add_argument("experiment", choices=sorted(EXPERIMENTS))
    ev.add_argument("directions", nargs="?", help="direction set file (.nav)")
    ev.add_argument("-o", "--output", default="evaluation", help="output folder")
    ev.add_argument("--checkpoint", help="generator file; default: the embedded model")
    ev.add_argument("--only", type=parse_seeds, help="only these direction indices")
    ev.add_argument("--n-z", type=int, default=64, help="latents per direction")
    ev.add_argument("--n-t", type=int, default=20, help="shifts per direction (locality)")
    ev.add_argument("--t-rel", type=float, default=1.0, help="edit size (reproduce), x amplitude")
    ev.add_argument("--steps", type=_count, default=300, help="optimisation steps (reproduce)")
    ev.add_argument(
        "--t", type=parse_range, help="realism: shifts as multiples of the amplitude, e.g. -2:2:9"
    )
    ev.add_argument("--baseline", action="append", help="realism: another set on the same plot")
    ev.add_argument("--n-real", type=int, default=512, help="real samples for toy-FD")
    ev.add_argument("--inception", help="realism: Inception-v3 weights file for FID")
    ev.add_argument("--real", help="realism with --inception: folder of real images")
    ev.add_argument("--method", default="svd", help="layers: discovery method")
    ev.add_argument("-k", type=int, default=16, help="layers/table: directions per layer/method")
    ev.add_argument("--layer", default="convs.3", help="table: the layer compared")
    ev.add_argument(
        "--methods", default=",".join(_TABLE_METHODS), help="table: comma-separated methods"
    )
    ev.add_argument(
        "--set", action="append", metavar="LABEL=FILE", help="table: use this set for LABEL"
    )
    ev.add_argument("--train-steps", type=int, default=600, help="table: optimize/hybrid steps")
    ev.add_argument("--spectrum-latents", type=int, default=32, help="table: spectrum latents")
    ev.add_argument("--recompute", action="store_true", help="table: ignore saved sets")
    ev.add_argument("--threshold", type=_fraction, default=0.25, help="clean: disentanglement >=")
    ev.add_argument(
        "--param", action="append", metavar="NAME=VALUE", help="method option (table: METHOD.NAME)"
    )
    ev.add_argument(
        "--metric",
        default="none",
        help="reproduce: image distance of eq. 5, none = pixel MSE (the paper's), or a "
        "perceptual metric (auto, lpips-vgg, random-vgg, toy-regressor)",
    )
    ev.add_argument("--backbone", help="LPIPS backbone file (vgg16-397923af.pth)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--allow-other-model", action="store_true", help="skip the model check")
    ev.add_argument("--device", type=_device, default="cpu", help="cpu or cuda")
    _generator_options(ev)
    ev.set_defaults(func=_cmd_evaluate)

    train = sub.add_parser(
        "train",
        formatter_class=_HelpFormatter,
        help="train a StyleGAN2 on the toy world (resumable)",
        description="Train navcuda's toy-world generator. Rerunning with the same --output "
        "resumes from its checkpoint; stop any time with Ctrl-C (a checkpoint is written).",
    )
    train.add_argument("-o", "--output", default="runs/toyfaces64", help="run folder")
    train.add_argument("--resolution", type=int, default=64, help="image size (32 or 64)")
    train.add_argument("--steps", type=_non_negative, help="number of steps to run now")
    train.add_argument("--minutes", type=_positive, help="stop after this many minutes")
    train.add_argument("--batch-size", type=_count, default=16)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--sample-every", type=_count, default=1000, help="steps between grids")
    train.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    train.add_argument(
        "--export", metavar="FILE", help="write the EMA generator of the run to FILE and exit"
    )
    train.add_argument("--device", type=_device, default="cpu", help="cpu or cuda")
    train.set_defaults(func=_cmd_train)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``navcuda`` console script."""
    args = build_parser().parse_args(_join_negative_values(argv))
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"navcuda {args.command}: interrupted (no partial output is left)", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"navcuda {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except (OSError, EOFError, pickle.UnpicklingError) as exc:  # file system, unreadable files
        print(f"navcuda {args.command}: error: {_describe(exc)}", file=sys.stderr)
        return 2


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        if not exc.strerror:  # raised with a message of ours
            return str(exc)
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return f"{type(exc).__name__}: {exc}"


if __name__ == "__main__":
    sys.exit(main())

"""``navcuda evaluate``: the paper's experiments (locality, latent reproduction, realism), the
layer sweep and the automatic Table 1, each writing EXPERIMENT.json and a figure.

Under ``torchrun`` (:mod:`navcuda.cli.distributed`) the experiments of
:data:`DISTRIBUTED_EXPERIMENTS` split the directions across the ranks
(:func:`navcuda.distributed.sharded_map`: every direction's result is computed as in one
process, from the same seeds) and rank 0 alone writes the JSON and the figure; an experiment
function returns None on the other ranks.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from navcuda import distributed as dist
from navcuda.cli.options import (
    OWN_OPTIONS,
    check_writable,
    label_of,
    load_generator_of,
    method_params,
    metric_of,
    parse_hparams,
    warn_large_shifts,
    write_json,
)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from navcuda.io.directions import DirectionSet

    dist.from_rank0(lambda: check_writable(args.output, "dir"))  # rank 0 writes (torchrun)
    _check_options(args)
    g = load_generator_of(args)
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
    if args.experiment == "reproduce":
        warn_large_shifts(args, g, ds, [args.t_rel], relative=True, option="--t-rel")
    elif args.experiment == "realism" and args.t:
        warn_large_shifts(args, g, ds, args.t, relative=True)
    out = Path(args.output)
    report = EXPERIMENTS[args.experiment](g, ds, out, args)
    if report is None:  # a rank other than 0 of a distributed run: rank 0 writes
        return 0
    path = write_json(out / f"{args.experiment}.json", report)
    print(f"wrote {path} and the figures beside it")
    return 0


def _check_options(args: argparse.Namespace) -> None:
    """Refuse, before any work, options that the experiment cannot use: --param of the
    experiments that run no discovery method, unknown method parameters (checked against the
    methods' tables), malformed --set / --methods of the table."""
    if args.experiment == "layers":
        method_params(args.method, args.param)
    elif args.experiment == "table":
        _table_options(args)
    elif args.param:
        raise ValueError(
            f"evaluate {args.experiment} runs no discovery method: --param is for evaluate "
            "layers (NAME=VALUE) and table (METHOD.NAME=VALUE)"
        )


def _table_options(
    args: argparse.Namespace,
) -> tuple[dict[str, str], list[str], dict[str, dict[str, object]]]:
    """The table's --set (label -> file), --methods and --param (method -> its parameters,
    checked against the method's table)."""
    from navcuda.discover.params import check_params

    given = {}
    for item in args.set or []:
        label, sep, file = item.partition("=")
        if not sep or not label.strip() or not file.strip():
            raise ValueError(f"--set expects LABEL=FILE (e.g. svd=dirs.nav), got {item!r}")
        given[label.strip()] = file.strip()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in TABLE_METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(TABLE_METHODS)}")
    extra: dict[str, dict[str, object]] = {}
    for key, value in parse_hparams(args.param):
        method, dot, name = key.partition(".")
        if not dot or method not in TABLE_METHODS:
            raise ValueError(
                f"evaluate table: --param expects METHOD.NAME=VALUE with METHOD one of "
                f"{list(TABLE_METHODS)} (e.g. optimize.lr=3e-4), got {key!r}"
            )
        extra.setdefault(method, {})[name] = value
    for method, params in extra.items():
        extra[method] = check_params(
            method, params, exclude=OWN_OPTIONS, owner=f"evaluate table --param {method}.NAME"
        )
    return given, methods, extra


#: The experiments that run on several processes (their directions split across the ranks).
DISTRIBUTED_EXPERIMENTS = ("locality", "reproduce", "realism")


def _eval_locality(g, ds, out: Path, args: argparse.Namespace) -> dict | None:
    from navcuda.evaluate.locality import locality_map, save_heatmaps

    def maps(share: list) -> list:
        return [locality_map(g, d, n_z=args.n_z, n_t=args.n_t, seed=args.seed,
                             progress=dist.is_rank0(), label=label_of(args))
                for d in share]  # fmt: skip

    results = dist.sharded_map(maps, list(ds))
    if results is None:
        return None
    save_heatmaps(results, out / "locality.png")
    return {
        "experiment": "locality",
        "set": str(args.directions),
        "n_z": args.n_z,
        "n_t": args.n_t,
        "directions": [{"name": r.name, "score": r.score, "t_max": r.t_max} for r in results],
    }


def _eval_reproduce(g, ds, out: Path, args: argparse.Namespace) -> dict | None:
    from navcuda.evaluate.latent_reproduction import plot_reproduction, reproduce_edit, spaces_for

    metric = metric_of(args.metric, g, args.backbone, args.device)

    def show(row: dict) -> None:
        print(f"{row['direction']:<16} {row['space']:<12} residual {row['relative_residual']:.3f}")

    def reproduce(share: list) -> list[list[dict]]:
        """Per direction: its rows, one per latent space."""
        per_direction = []
        for d in share:
            t = args.t_rel * (d.amplitude or 1.0)
            rows = []
            for space in spaces_for(g, d):
                r = reproduce_edit(g, d, t, space, n_z=args.n_z, steps=args.steps,
                                   seed=args.seed, metric=metric, progress=dist.is_rank0(),
                                   label=label_of(args))  # fmt: skip
                rows.append({"direction": d.name, "space": space, "t": t,
                             "relative_residual": r.relative_residual,
                             "unreachable": r.unreachable})  # fmt: skip
                if not dist.is_active():  # as it goes; several processes: all of them at the end
                    show(rows[-1])
            per_direction.append(rows)
        return per_direction

    gathered = dist.sharded_map(reproduce, list(ds))
    if gathered is None:
        return None
    rows = [row for rows_ in gathered for row in rows_]
    if dist.is_active():
        for row in rows:
            show(row)
    plot_reproduction(rows, out / "reproduce.png", threshold=0.5)
    return {"experiment": "reproduce", "threshold": 0.5, "rows": rows,
            "metric": "pixel MSE" if metric is None else metric.describe()}  # fmt: skip


def _require_toy_model(g, what: str) -> None:
    from navcuda.models.default import is_toy_model

    if not is_toy_model(g):
        raise ValueError(f"{what} scores the toy world's factors: use the bundled model")


def _eval_realism(g, ds, out: Path, args: argparse.Namespace) -> dict | None:
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

        def real_statistics() -> tuple[torch.Tensor, torch.Tensor]:
            real = torch.cat([load_image(f, 299) for f in files])
            return feature_statistics(
                torch.cat([net(c.to(args.device)).cpu() for c in real.split(32)])
            )

        stats = dist.from_rank0(real_statistics)  # several processes: computed once, sent
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
        stats = dist.from_rank0(lambda: world_statistics(args.n_real, args.seed, reg))
        feature_fn, metric = reg.features, "toy-FD"
    ts = args.t or [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]
    curves = dist.sharded_map(
        lambda share: realism_curves(
            g,
            share,
            stats,
            feature_fn,
            relative_ts=ts,
            n_samples=args.n_z,
            seed=args.seed,
            label=label_of(args),
            progress=dist.is_rank0(),
        ),  # fmt: skip
        dirs,
    )
    if curves is None:
        return None
    plot_realism(curves, out / "realism.png", title=f"{metric} vs shift", metric=metric)
    return {"experiment": "realism", "metric": metric, "n_samples": args.n_z,
            "curves": [c.to_dict() for c in curves]}  # fmt: skip


def _eval_layers(g, ds, out: Path, args: argparse.Namespace) -> dict:
    from navcuda.evaluate.layer_sweep import layer_sweep, plot_layer_sweep

    _require_toy_model(g, "the layer sweep")
    params = method_params(args.method, args.param)
    sweep = layer_sweep(g, method=args.method, k=args.k, n_samples=args.n_z, seed=args.seed,
                        threshold=args.threshold, **params)  # fmt: skip
    plot_layer_sweep(sweep, out / "layers.png")
    for r in sweep["layers"]:
        top = sorted(r["profile"].items(), key=lambda kv: -kv[1])[:3]
        print(
            f"{r['layer']:<8} {r['resolution']:>4}px  " + ", ".join(f"{f} {v:.2f}" for f, v in top)
        )
    return sweep


#: methods of the table and their small-budget settings for a CPU run (--param overrides them)
TABLE_METHODS = ("svd", "spectrum", "optimize", "hybrid", "ica", "ganspace", "sefa")


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
    given, methods, extra = _table_options(args)
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
        hp = {**budgets.get(m, {}), **extra.get(m, {})}
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

"""``navcuda edit``: apply one or several directions (``--direction NAME=T``) to a generated sample,
a photo (projected into W / W+ first), a seed range or a folder of photos (batch: one output per
input plus a contact sheet, resumable), or reproduce an exported recipe (``--recipe``)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from navcuda.cli.options import (
    HelpFormatter,
    check_writable,
    count,
    device_name,
    finite,
    generator_options,
    label_of,
    load_generator_of,
    metric_of,
    parse_seeds,
    seed_value,
    warn_large_shifts,
)

__all__ = ["add_edit_parser", "cmd_edit", "parse_direction"]


def seeds_arg(text: str):
    """``--seed``: one seed, or a range / list (``0-7``, ``1,5,9``) for a batch."""
    if text.strip().startswith("-"):
        raise argparse.ArgumentTypeError(
            f"expected an integer >= 0 or a range such as 0-7, got {text!r}"
        )
    return parse_seeds(text)


def add_edit_parser(sub) -> None:
    """Add the ``edit`` command to the subparsers ``sub``."""
    edit = sub.add_parser(
        "edit",
        formatter_class=HelpFormatter,
        help="apply directions to a photo (projected into W+), a generated sample, a folder of "
        "photos or a seed range; or reproduce an edit recipe",
        description="One input (a photo, or --seed S): write input | reconstruction | edited "
        "(photo) or sample | edited (seed) side by side into -o FILE. Several inputs (photo "
        "files, folders, globs such as 'shots/*.jpg', or --seed 0-99): write one edited image and "
        "its recipe per input plus contact_sheet.png into the folder -o, skipping inputs already "
        "done (rerun an interrupted batch to finish it). --recipe FILE: render the edited image "
        "of an exported recipe, bit for bit.",
    )
    edit.add_argument("images", nargs="*", metavar="PHOTO", help="photos, folders or globs")
    edit.add_argument("--seed", type=seeds_arg, help="a seed (or a range, e.g. 0-7) to edit")
    edit.add_argument("--recipe", help="reproduce this edit recipe (.json)")
    edit.add_argument(
        "--directions",
        action="append",
        help="direction set file (.nav; repeat for several); default: the bundled model's named "
        "set (eye size, nose length, mouth width, ...)",
    )
    edit.add_argument(
        "--direction",
        action="append",
        metavar="NAME[=T]",
        help="direction name (any case) or index, with its shift (repeat to combine: "
        "--direction 'eye size=2' --direction 'nose length=-1'); without =T, --t",
    )
    edit.add_argument(
        "--t", type=finite, default=1.0, help="shift: multiple of the recommended amplitude"
    )
    edit.add_argument("--absolute", action="store_true", help="shifts are absolute norms")
    edit.add_argument(
        "-o",
        "--output",
        help="output image (one input; default edit.png) or folder (default edits)",
    )
    edit.add_argument("--save-recipe", help="one input: also write its edit recipe (.json)")
    edit.add_argument(
        "--no-contact-sheet", action="store_true", help="several inputs: skip contact_sheet.png"
    )
    edit.add_argument("--checkpoint", help="generator file; default: the embedded model")
    edit.add_argument("--steps", type=count, default=500, help="projection steps")
    edit.add_argument("--mode", choices=["w", "w+"], default="w+", help="projection space")
    edit.add_argument(
        "--projection-seed", type=seed_value, default=0, help="seed of the projection"
    )
    edit.add_argument("--save-projection", help="also save the projected ws and noise (.pt)")
    edit.add_argument(
        "--metric",
        default="auto",
        help="perceptual loss of the projection besides pixel MSE: auto (LPIPS-VGG when its "
        "backbone is found, else toy-regressor on the bundled model / random-vgg), lpips-vgg, "
        "random-vgg, toy-regressor, none",
    )
    edit.add_argument("--backbone", help="LPIPS backbone file (vgg16-397923af.pth)")
    edit.add_argument("--truncation", type=finite, default=0.7, help="truncation psi (--seed)")
    edit.add_argument(
        "--allow-other-model",
        action="store_true",
        help="apply direction sets or a --recipe made on another model (a fine-tuned one of the "
        "same architecture; a recipe: with a warning)",
    )
    edit.add_argument("--device", type=device_name, default="cpu", help="cpu or cuda")
    generator_options(edit)
    edit.set_defaults(func=cmd_edit)


def parse_direction(spec: str, default_t: float) -> tuple[str, float]:
    """``"eye size=2"`` -> ``("eye size", 2.0)``; a spec without a number after its last ``=``
    is a name, shifted by ``default_t``."""
    name, sep, value = spec.rpartition("=")
    if not sep:
        return spec.strip(), default_t
    try:
        t = float(value)
    except ValueError:
        return spec.strip(), default_t
    if not math.isfinite(t):
        raise ValueError(f"--direction {spec!r}: T must be a finite number, got {value!r}")
    if not name.strip():
        raise ValueError(f"--direction {spec!r}: give a direction name before '='")
    return name.strip(), t


def _model_source(args: argparse.Namespace) -> str:
    if args.model:
        return f"model:{args.model}"
    if args.checkpoint:
        return str(Path(args.checkpoint).resolve())
    from navcuda.recipe import BUNDLED

    return BUNDLED


def _sources(args: argparse.Namespace) -> list:
    from navcuda.recipe import DirectionSource

    if args.directions is None:
        if args.checkpoint is not None or args.model:
            raise ValueError("--directions is required with --checkpoint or --model")
        return [DirectionSource.bundled()]
    return [DirectionSource.from_file(p) for p in args.directions]


def _edits(args: argparse.Namespace, sources: list) -> list[tuple]:
    """``(source, index, t)`` for every ``--direction``."""
    from navcuda.project import select_direction

    out = []
    for spec in args.direction:
        name, t = parse_direction(spec, args.t)
        found, first_error = [], None
        for src in sources:
            try:
                d = select_direction(src.directions, name)
            except KeyError as exc:
                first_error = first_error or exc
                continue
            found.append((src, d.meta["set_index"], t))
        if not found:
            assert first_error is not None
            raise first_error
        if len(found) > 1:
            raise ValueError(
                f"direction {name!r} is in several of the --directions sets; give it in one only"
            )
        out.append(found[0])
    return out


def _is_batch(args: argparse.Namespace) -> bool:
    if args.seed is not None:
        return len(args.seed) > 1
    if len(args.images) > 1:
        return True
    p = Path(args.images[0])
    return p.is_dir() or (any(c in args.images[0] for c in "*?[") and not p.exists())


def _describe(edits: list[tuple], relative: bool) -> str:
    parts = []
    for src, index, t in edits:
        d = src.directions[index]
        if relative and d.amplitude:
            parts.append(f"direction {d.name!r}, t = {t * d.amplitude:.4g} = {t:g} x amplitude "
                         f"{d.amplitude:.4g}")  # fmt: skip
        else:
            parts.append(f"direction {d.name!r}, t = {t:.4g}")
    return "; ".join(parts)


def cmd_edit(args: argparse.Namespace) -> int:
    if args.recipe is not None:
        return _from_recipe(args)
    if bool(args.images) == (args.seed is not None):
        raise ValueError(
            "give either an image to project (photos, folders or globs) or --seed S (or a range "
            "such as 0-7), or --recipe FILE"
        )
    if not args.direction:
        raise ValueError("give at least one --direction NAME[=T] (or --recipe FILE)")
    batch = _is_batch(args)
    output = args.output or ("edits" if batch else "edit.png")
    check_writable(output, "dir" if batch else "file")
    for extra in (args.save_recipe, args.save_projection):
        if extra:
            if batch:
                raise ValueError("--save-recipe / --save-projection take one input (a batch "
                                 "writes a recipe per input)")  # fmt: skip
            check_writable(extra, "file")
    photos = None
    if args.images:
        from navcuda.batch_edit import photo_inputs

        photos = photo_inputs(args.images)  # missing files: refused before any work
    sources = _sources(args)
    g = load_generator_of(args)
    for src in sources:
        src.directions.check_compatible(g, allow_other_model=args.allow_other_model)
    edits = _edits(args, sources)
    relative = not args.absolute
    dirs = [src.directions[i] for src, i, _ in edits]
    top = max(abs(t) for _, _, t in edits)
    warn_large_shifts(args, g, dirs, [top], relative=relative)
    if batch:
        return _batch(args, g, edits, photos, output)
    return _single(args, g, edits, photos, Path(output))


def _single(args, g, edits, photos, out: Path) -> int:
    from navcuda.batch_edit import ProjectionSettings
    from navcuda.recipe import LatentInput, Recipe, SeedInput, render_recipe
    from navcuda.rendering import save_grid

    relative = not args.absolute
    sources = list(dict.fromkeys(src for src, _, _ in edits))
    source = _model_source(args)
    if photos:
        from navcuda.project import load_image, project

        photo = photos[0].photo
        channels, height, _ = g.image_shape
        target = load_image(photo, height, channels)
        proj = project(
            g,
            target,
            steps=args.steps,
            mode=args.mode,
            seed=args.projection_seed,
            metric=metric_of(args.metric, g, args.backbone, args.device),
            progress=True,
        )
        latent = LatentInput.of(proj, str(photo))
        settings = ProjectionSettings(args.steps, args.mode, args.projection_seed, args.metric)
        recipe = Recipe.make(g, latent, edits, relative=relative, source=source)
        recipe = recipe.with_extra(projection=settings.to_json())
        edited = render_recipe(g, recipe, sources)
        panels = torch.cat([target.to(edited.device), proj.image, edited]).float().cpu()
        what = "input | reconstruction | edited"
        if args.save_projection:
            from navcuda.io.atomic import atomic_path

            with atomic_path(args.save_projection) as tmp:
                torch.save({"ws": latent.ws, "noise": dict(latent.noise or {})}, tmp)
    else:
        seed = int(args.seed[0])
        recipe = Recipe.make(
            g, SeedInput(seed, args.truncation, label_of(args)), edits, relative=relative,
            source=source,
        )  # fmt: skip
        original = render_recipe(g, recipe, sources, original=True)
        edited = render_recipe(g, recipe, sources)
        panels = torch.cat([original, edited]).float().cpu()
        what = f"seed {seed} | edited"
    path = save_grid(panels, out, nrow=panels.shape[0])
    note = ""
    if args.save_recipe:
        note = f" and its recipe to {recipe.save(args.save_recipe)}"
    print(f"{_describe(edits, relative)}; wrote {what} to {path}{note}")
    return 0


def _batch(args, g, edits, photos, output: str) -> int:
    from navcuda.batch_edit import ProjectionSettings, edit_batch, seed_inputs

    if photos is not None:
        from navcuda.project import load_image

        channels, height, _ = g.image_shape
        for item in photos:  # a file that is not an image: refused before any projection
            load_image(item.photo, height, channels)
        inputs, total = photos, len(photos)
        metric = metric_of(args.metric, g, args.backbone, args.device)
    else:
        inputs, total, metric = seed_inputs(args.seed), len(args.seed), None
    res = edit_batch(
        g,
        inputs,
        edits,
        output,
        relative=not args.absolute,
        truncation=args.truncation,
        label=label_of(args),
        projection=ProjectionSettings(args.steps, args.mode, args.projection_seed, args.metric),
        metric=metric,
        source=_model_source(args),
        sheet=not args.no_contact_sheet,
        total=total,
    )
    done = f", {res.skipped} done before" if res.skipped else ""
    sheet = f" and {res.sheet}" if res.sheet else ""
    print(
        f"{_describe(edits, not args.absolute)}; {res.count} inputs: wrote {len(res.written)} "
        f"edited images with their recipes to {output}/{done}{sheet}"
    )
    return 0


def _from_recipe(args: argparse.Namespace) -> int:
    from navcuda.recipe import BUNDLED, DirectionSource, Recipe, RecipeModelError, render_recipe
    from navcuda.rendering import atomic_save_image, to_image

    if args.images or args.seed is not None or args.direction:
        raise ValueError("--recipe holds the input and the directions: drop the others")
    out = Path(args.output or "edit.png")
    check_writable(out, "file")
    recipe = Recipe.load(args.recipe)
    if args.checkpoint is None and not args.model and recipe.source not in (None, BUNDLED):
        if Path(recipe.source).is_file():
            args.checkpoint = recipe.source  # the recipe's model, where it still is
    extra = [DirectionSource.from_file(p) for p in args.directions or []]
    g = load_generator_of(args)
    fp = g.fingerprint()
    if fp != recipe.fingerprint:
        if not args.allow_other_model:
            try:
                recipe.check_model(g)
            except RecipeModelError as exc:
                raise RecipeModelError(
                    f"{exc}, or pass --allow-other-model to apply it to this one anyway"
                ) from None
        print(
            f"navcuda edit: warning: the recipe was made on model {recipe.fingerprint} "
            f"({recipe.architecture}), not on this one ({fp}, {g.architecture}); applying it "
            "anyway (--allow-other-model): the image is not the recipe's",
            file=sys.stderr,
        )
    base = Path(args.recipe).parent
    image = render_recipe(g, recipe, extra, base_dir=base, allow_other_model=args.allow_other_model)
    atomic_save_image(to_image(image), out)
    names = ", ".join(f"{t.name}={t.t:.4g}" for t in recipe.terms) or "no directions"
    print(f"recipe {args.recipe} ({names}); wrote the edited image to {out}", file=sys.stdout)
    return 0

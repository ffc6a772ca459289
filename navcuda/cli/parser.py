"""The argument parser of every ``navcuda`` command."""

from __future__ import annotations

import argparse

from navcuda.cli.commands import (
    cmd_demo,
    cmd_discover,
    cmd_gallery,
    cmd_info,
    cmd_name,
    cmd_render,
    cmd_train,
)
from navcuda.cli.edit import add_edit_parser
from navcuda.cli.evaluate import EXPERIMENTS, TABLE_METHODS, cmd_evaluate
from navcuda.cli.options import (
    HelpFormatter,
    count,
    device_name,
    finite,
    fraction,
    generator_options,
    non_negative,
    non_negative_float,
    parse_range,
    parse_seeds,
    port_number,
    positive,
    seed_value,
)
from navcuda.cli.studio import add_studio_parser

YES_HELP = (
    "start even when the estimate exceeds the free memory or disk, or an hour (without it, "
    "such a run is refused with the estimate)"
)


def build_parser() -> argparse.ArgumentParser:
    """The ``navcuda`` parser: one subcommand per command, each with its ``func``."""
    p = argparse.ArgumentParser(
        prog="navcuda",
        description="Find and apply interpretable directions in the weights of a generator "
        "(StyleGAN2, StyleGAN3, conditional StyleGAN2-ADA, or any torch conv generator with "
        "--model).",
    )
    from navcuda import __version__

    p.add_argument("--version", action="version", version=f"navcuda {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser(
        "info",
        formatter_class=HelpFormatter,
        help="list the conv layers of a generator (or build details)",
    )
    info.add_argument("checkpoint", nargs="?", help="generator file (.pt, .pkl, .safetensors)")
    info.add_argument("--build", action="store_true", help="print build details as JSON")
    info.add_argument(
        "--selftest", action="store_true", help="check every native op against its reference"
    )
    info.add_argument(
        "--device", default=None, type=device_name, help="device for --selftest (default: best)"
    )
    generator_options(info, label=False)
    info.set_defaults(func=cmd_info)

    demo = sub.add_parser(
        "demo",
        formatter_class=HelpFormatter,
        help="render strips of the top singular directions of one layer",
        description="Render G(z) while shifting one layer's kernel along its top singular "
        "directions (the paper's SVD baseline): one PNG per direction, one row per seed. On the "
        "embedded model, also the bundled named edits (in OUTPUT/named/).",
    )
    demo.add_argument("-o", "--output", default="navcuda-demo", help="output folder")
    demo.add_argument("--checkpoint", help="generator file; default: the embedded model")
    demo.add_argument("--layer", default="3", help="official index (3) or name (convs.3)")
    demo.add_argument("-k", type=count, default=8, help="number of singular directions")
    demo.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-3"), help="e.g. 0-3")
    demo.add_argument(
        "--t",
        type=parse_range,
        default=parse_range("-2:2:5"),
        help="shifts as multiples of each direction's recommended amplitude (START:STOP:COUNT)",
    )
    demo.add_argument("--seed", type=seed_value, default=0, help="seed of the calibration latents")
    demo.add_argument("--device", type=device_name, default="cpu", help="cpu or cuda")
    generator_options(demo)
    demo.set_defaults(func=cmd_demo)

    from navcuda.discover import METHODS

    disc = sub.add_parser(
        "discover",
        formatter_class=HelpFormatter,
        help="find interpretable directions in one layer and save them",
        description="Find K directions in the weights of one conv layer (or, for the latent "
        "baselines, in W) and save them as a direction set (.nav). Methods: "
        + ", ".join(sorted(METHODS))
        + ". Method hyper-parameters go through --param NAME=VALUE; --list-params prints those of "
        "--method (name, type, default, rule, meaning).",
    )
    disc.add_argument("--method", default="svd", choices=sorted(METHODS))
    disc.add_argument("--layer", default="3", help="official index (3) or name (convs.3)")
    disc.add_argument(
        "-k", type=count, default=64, help="number of directions (at most what the method can find)"
    )
    disc.add_argument("-o", "--output", default="directions.nav", help="direction set file")
    disc.add_argument("--checkpoint", help="generator file; default: the embedded model")
    disc.add_argument("--seed", type=seed_value, default=0)
    disc.add_argument(
        "--list-params",
        action="store_true",
        help="print the parameters of --method (name, type, default, rule, meaning) and exit",
    )
    disc.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="method option, e.g. n_latents=64, solver=power, steps=2000 (--list-params lists "
        "them); for hybrid, spectrum_NAME=VALUE goes to its spectrum run",
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
    disc.add_argument(
        "--memory-budget",
        help="spectrum/hybrid: memory for the run, e.g. 24GB or 50%% (of the free memory); "
        "default auto (60%% of it). Past it the Hessian's latents are recomputed per block; "
        "the memory model and expected time are printed before the run",
    )
    disc.add_argument("--device", type=device_name, default="cpu", help="cpu or cuda")
    generator_options(disc)
    disc.set_defaults(func=cmd_discover)

    rend = sub.add_parser(
        "render",
        formatter_class=HelpFormatter,
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
    rend.add_argument(
        "--labels", action="store_true", help="draw direction names and t on strips and GIFs"
    )
    rend.add_argument(
        "--video", action="store_true", help="also write MP4 videos (needs navcuda[video])"
    )
    rend.add_argument("--yes", action="store_true", help=YES_HELP)
    rend.add_argument("--truncation", type=finite, default=0.7, help="truncation psi")
    rend.add_argument("--allow-other-model", action="store_true", help="skip the model check")
    rend.add_argument("--device", type=device_name, default="cpu", help="cpu or cuda")
    generator_options(rend)
    rend.set_defaults(func=cmd_render)

    gal = sub.add_parser(
        "gallery",
        formatter_class=HelpFormatter,
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
    gal.add_argument("--truncation", type=finite, default=0.7, help="truncation psi")
    gal.add_argument("--serve", action="store_true", help="then serve it on 127.0.0.1")
    gal.add_argument("--yes", action="store_true", help=YES_HELP)
    gal.add_argument(
        "--port", type=port_number, default=8000, help="port for --serve (0: any free)"
    )
    gal.add_argument("--allow-other-model", action="store_true", help="skip the model check")
    gal.add_argument("--device", type=device_name, default="cpu", help="cpu or cuda")
    generator_options(gal)
    gal.set_defaults(func=cmd_gallery)

    name = sub.add_parser(
        "name",
        formatter_class=HelpFormatter,
        help="name directions: merge a gallery's names.json, or --auto from toy-world factors",
        description="With names.json: names go into the set's names, good/bad marks into "
        "extra['marks']. With --auto (toy-world models): each direction is scored with the "
        "factor regressor and named after the ground-truth factor it moves most when its "
        "disentanglement reaches --min-disentanglement (one direction per factor; positive t "
        "increases the factor); unnamed directions are dropped unless --keep-unnamed. With "
        "--fit (toy-world models): per factor, the combination of the set's directions that "
        "moves it and no other, kept when it is clean at t = +-2 (amplitude: half its clean "
        "shift). Writes the set in place (atomically) unless -o is given.",
    )
    name.add_argument("directions", help="direction set file (.nav)")
    name.add_argument("names", nargs="?", help="names.json exported by the gallery")
    name.add_argument("-o", "--output", help="write the named set here instead")
    name.add_argument(
        "--allow-other-set", action="store_true", help="apply names exported for another set"
    )
    name.add_argument(
        "--allow-other-model", action="store_true", help="--auto, --fit: skip the model check"
    )
    name.add_argument("--auto", action="store_true", help="name from toy-world factor scores")
    name.add_argument("--min-disentanglement", type=fraction, default=0.25, help="for --auto")
    name.add_argument(
        "--fit", action="store_true", help="fit one clean combination per toy-world factor"
    )
    name.add_argument("--factors", nargs="+", help="--fit: these factors (default: every one)")
    name.add_argument(
        "--samples", type=count, help="latents per direction (--auto: 16) or per check (--fit: 256)"
    )
    name.add_argument("--keep-unnamed", action="store_true", help="for --auto")
    name.add_argument("--seed", type=seed_value, default=0, help="latent seed (--auto, --fit)")
    name.add_argument("--checkpoint", help="generator (default: the bundled model)")
    name.add_argument("--device", type=device_name, default="cpu", help="cpu or cuda")
    generator_options(name)
    name.set_defaults(func=cmd_name)

    add_edit_parser(sub)
    add_studio_parser(sub)

    ev = sub.add_parser(
        "evaluate",
        formatter_class=HelpFormatter,
        help="run one of the paper's experiments (or the automatic Table 1)",
        description="Experiments: locality (per-pixel change maps and a locality score), "
        "reproduce (can a latent shift in Z, W, W+ or the activations imitate the edit?), "
        "realism (toy-FD, or FID with --inception/--real, against the shift), layers (factor "
        "profile of every layer's directions; no set needed), table (the paper's Table 1 "
        "measured on the toy world for svd, spectrum, optimize, hybrid, ica, ganspace and sefa; no "
        "set needed). Each writes EXPERIMENT.json and a figure into the output folder.",
    )
    ev.add_argument("experiment", choices=sorted(EXPERIMENTS))
    ev.add_argument("directions", nargs="?", help="direction set file (.nav)")
    ev.add_argument("-o", "--output", default="evaluation", help="output folder")
    ev.add_argument("--checkpoint", help="generator file; default: the embedded model")
    ev.add_argument("--only", type=parse_seeds, help="only these direction indices")
    ev.add_argument("--n-z", type=count, default=64, help="latents per direction")
    ev.add_argument("--n-t", type=count, default=20, help="shifts per direction (locality)")
    ev.add_argument("--t-rel", type=finite, default=1.0, help="edit size (reproduce), x amplitude")
    ev.add_argument("--steps", type=count, default=300, help="optimisation steps (reproduce)")
    ev.add_argument(
        "--t", type=parse_range, help="realism: shifts as multiples of the amplitude, e.g. -2:2:9"
    )
    ev.add_argument("--baseline", action="append", help="realism: another set on the same plot")
    ev.add_argument("--n-real", type=count, default=512, help="real samples for toy-FD")
    ev.add_argument("--inception", help="realism: Inception-v3 weights file for FID")
    ev.add_argument("--real", help="realism with --inception: folder of real images")
    ev.add_argument(
        "--method", default="svd", choices=sorted(METHODS), help="layers: discovery method"
    )
    ev.add_argument("-k", type=count, default=16, help="layers/table: directions per layer/method")
    ev.add_argument("--layer", default="convs.3", help="table: the layer compared")
    ev.add_argument(
        "--methods", default=",".join(TABLE_METHODS), help="table: comma-separated methods"
    )
    ev.add_argument(
        "--set", action="append", metavar="LABEL=FILE", help="table: use this set for LABEL"
    )
    ev.add_argument(
        "--train-steps", type=non_negative, default=600, help="table: optimize/hybrid steps"
    )
    ev.add_argument("--spectrum-latents", type=count, default=32, help="table: spectrum latents")
    ev.add_argument("--recompute", action="store_true", help="table: ignore saved sets")
    ev.add_argument("--threshold", type=fraction, default=0.25, help="clean: disentanglement >=")
    ev.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="layers: option of --method; table: METHOD.NAME=VALUE",
    )
    ev.add_argument(
        "--metric",
        default="none",
        help="reproduce: image distance of eq. 5, none = pixel MSE (the paper's), or a "
        "perceptual metric (auto, lpips-vgg, random-vgg, toy-regressor)",
    )
    ev.add_argument("--backbone", help="LPIPS backbone file (vgg16-397923af.pth)")
    ev.add_argument("--seed", type=seed_value, default=0)
    ev.add_argument("--allow-other-model", action="store_true", help="skip the model check")
    ev.add_argument("--device", type=device_name, default="cpu", help="cpu or cuda")
    generator_options(ev)
    ev.set_defaults(func=cmd_evaluate)

    train = sub.add_parser(
        "train",
        formatter_class=HelpFormatter,
        help="train a StyleGAN2 on the toy world (resumable)",
        description="Train navcuda's toy-world generator. Rerunning with the same --output "
        "resumes from its checkpoint; stop any time with Ctrl-C (a checkpoint is written).",
    )
    train.add_argument("-o", "--output", default="runs/toyfaces64", help="run folder")
    train.add_argument("--resolution", type=int, default=64, help="image size (32 or 64)")
    train.add_argument("--steps", type=non_negative, help="number of steps to run now")
    train.add_argument("--minutes", type=positive, help="stop after this many minutes")
    train.add_argument("--batch-size", type=count, default=16)
    train.add_argument("--seed", type=seed_value, default=0)
    train.add_argument(
        "--kernel-decay",
        type=non_negative_float,
        default=0.0,
        help="decoupled weight decay of the demodulated conv kernels (a new run's; resuming "
        "keeps the checkpoint's)",
    )
    train.add_argument(
        "--kernel-init",
        type=positive,
        default=1.0,
        help="scale of the demodulated conv kernels at initialisation (same function; a smaller "
        "one lets training outweigh the random start sooner; a new run's)",
    )
    train.add_argument("--sample-every", type=count, default=1000, help="steps between grids")
    train.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    train.add_argument(
        "--export", metavar="FILE", help="write the EMA generator of the run to FILE and exit"
    )
    train.add_argument("--device", type=device_name, default="cpu", help="cpu or cuda")
    train.set_defaults(func=cmd_train)
    return p

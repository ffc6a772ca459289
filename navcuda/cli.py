"""The ``navcuda`` command line: thin over the Python API (parse, call, write files, say where).

Commands:
  navcuda info [CHECKPOINT]          build details and every conv layer of a generator
  navcuda demo -o DIR [options]      strips of the top singular directions of one layer
"""

from __future__ import annotations

import argparse
import json
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
    if any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be non-negative, got {text!r}")
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


def _load(checkpoint: str | None, device: str):
    from navcuda.models.default import load_default

    if checkpoint is None:
        return load_default(device=device)
    from navcuda.models.checkpoints import load_generator

    return load_generator(checkpoint, device=device).eval()


def _cmd_info(args: argparse.Namespace) -> int:
    import navcuda
    from navcuda.models.layers import list_layers

    if args.build:
        print(json.dumps(navcuda.build_info(), indent=2, default=str))
        return 0
    g = _load(args.checkpoint, "cpu")
    cfg = g.config
    n_params = sum(p.numel() for p in g.parameters())
    print(f"generator: {args.checkpoint or 'embedded default'}")
    print(
        f"  resolution {cfg.resolution}, z_dim {cfg.z_dim}, w_dim {cfg.w_dim}, mapping depth "
        f"{cfg.n_mlp}, num_ws {cfg.num_ws}, {n_params / 1e6:.2f} M parameters"
    )
    print("  ix  name        kind         res  weight [out, in, kh, kw]")
    for info in list_layers(g):
        print("  " + info.describe())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from navcuda.models.layers import get_layer
    from navcuda.render import render_strips, save_grid
    from navcuda.shift import Direction, layer_space

    g = _load(args.checkpoint, args.device)
    info = get_layer(g, args.layer)
    space = layer_space(g, info.name)
    k = min(args.k, space.rank)
    directions = [Direction.singular(info.name, i, space.rank) for i in range(k)]
    z = torch.stack(
        [
            torch.randn(g.config.z_dim, generator=torch.Generator().manual_seed(s))
            for s in args.seeds
        ]
    ).to(args.device)
    ws = g.mapping(z, args.truncation)
    # t is given in units of the layer's largest singular value, so the default range is sensible
    # for any model; the strip files say which absolute t was used.
    scale = float(space.s[0])
    ts = [t * scale for t in args.t]
    strips = render_strips(g, directions, ws, ts)
    out = Path(args.output)
    written = []
    for i, d in enumerate(directions):
        written.append(save_grid(strips[i], out / f"{info.name}_{d.name}.png"))
    manifest = {
        "checkpoint": args.checkpoint or "embedded default",
        "layer": info.name,
        "directions": [d.name for d in directions],
        "seeds": args.seeds,
        "t": ts,
        "rows": "one row per seed, columns over t",
    }
    (out / "demo.json").write_text(json.dumps(manifest, indent=2))
    print(f"wrote {len(written)} strips ({len(args.seeds)} seeds x {len(ts)} shifts) to {out}/")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from navcuda.models.default import TOY_CONFIG
    from navcuda.models.stylegan2 import GeneratorConfig
    from navcuda.toyworld import ToyWorld
    from navcuda.training import TrainConfig, Trainer

    torch.set_flush_denormal(True)
    out = Path(args.output)
    ckpt = out / "checkpoint.pt"
    world = ToyWorld(resolution=args.resolution)

    def sampler(n: int, gen: torch.Generator) -> torch.Tensor:
        return world.sample(n, gen)[0]

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
    print(f"step {trainer.step}: checkpoint {ckpt}, samples in {out / 'samples'}/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="navcuda",
        description="Find and apply interpretable directions in the weights of a StyleGAN2 "
        "generator.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="list the conv layers of a generator (or build details)")
    info.add_argument("checkpoint", nargs="?", help="generator file (.pt, .pkl, .safetensors)")
    info.add_argument("--build", action="store_true", help="print build details as JSON")
    info.set_defaults(func=_cmd_info)

    demo = sub.add_parser(
        "demo",
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
        default=parse_range("-1:1:7"),
        help="shifts, in units of the layer's largest singular value (START:STOP:COUNT)",
    )
    demo.add_argument("--truncation", type=float, default=0.7, help="truncation psi")
    demo.add_argument("--device", default="cpu", help="cpu or cuda")
    demo.set_defaults(func=_cmd_demo)

    train = sub.add_parser(
        "train",
        help="train a StyleGAN2 on the toy world (resumable)",
        description="Train navcuda's toy-world generator. Rerunning with the same --output "
        "resumes from its checkpoint; stop any time with Ctrl-C (a checkpoint is written).",
    )
    train.add_argument("-o", "--output", default="runs/toyfaces64", help="run folder")
    train.add_argument("--resolution", type=int, default=64, help="image size (32 or 64)")
    train.add_argument("--steps", type=int, help="number of steps to run now")
    train.add_argument("--minutes", type=float, help="stop after this many minutes")
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--sample-every", type=int, default=1000, help="steps between grids")
    train.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    train.add_argument("--device", default="cpu", help="cpu or cuda")
    train.set_defaults(func=_cmd_train)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``navcuda`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"navcuda {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The ``navcuda`` command line: thin over the Python API (parse, call, write files, say where).

Commands:
  navcuda info [CHECKPOINT]          build details and every conv layer of a generator
  navcuda demo -o DIR                strips of the top singular directions of the default layer
  navcuda discover --method M -o F   find directions and save them as a direction set
  navcuda render F -o DIR            strips / GIFs of a direction set
  navcuda gallery F -o DIR           a static HTML page to browse, name and mark directions
  navcuda name F names.json          merge names exported from the gallery into a set
  navcuda edit IMAGE --direction D=T project an image (or --seed S, a folder, a seed range, a
                                     --recipe) and apply named edits
  navcuda studio [F ...]             interactive editor in the browser (navcuda[studio])
  navcuda evaluate EXP F -o DIR      the paper's experiments (locality, reproduce, ...)
  navcuda train -o DIR               train the toy-world generator (resumable)

Modules: ``options`` (argument types, shared options, the generator of a command),
``commands``, ``edit`` and ``studio`` (those two commands), ``evaluate`` (the ``evaluate``
experiments), ``parser``.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import warnings
from collections.abc import Callable, Sequence

from navcuda.cli.options import join_negative_values, parse_range, parse_seeds
from navcuda.cli.parser import build_parser

__all__ = ["build_parser", "main", "parse_range", "parse_seeds", "run_command"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``navcuda`` console script (and of ``python -m navcuda``, which
    ``torchrun`` launches: the command then runs on several processes,
    :mod:`navcuda.cli.distributed`)."""
    args = build_parser().parse_args(join_negative_values(argv))
    from navcuda.distributed import DistributedError, launch_env

    try:
        env = launch_env()
    except DistributedError as exc:
        print(f"navcuda {args.command}: error: {exc}", file=sys.stderr)
        return 2
    if env is not None:
        from navcuda.cli.distributed import run_distributed

        return run_distributed(args, run_command, env)
    return run_command(args)


def run_command(args: argparse.Namespace, report: Callable[[str], None] | None = None) -> int:
    """Run the parsed command; bad input ends it with one error line and exit code 2 (also
    passed to ``report``)."""
    from navcuda.shift import LargeShiftWarning

    def fail(msg: object, code: int) -> int:
        print(f"navcuda {args.command}: error: {msg}", file=sys.stderr)
        if report is not None:
            report(str(msg))
        return code

    try:
        with warnings.catch_warnings():
            # the commands say it once before rendering (options.warn_large_shifts), not per batch
            warnings.simplefilter("ignore", LargeShiftWarning)
            return args.func(args)
    except KeyboardInterrupt:
        print(f"navcuda {args.command}: interrupted (no partial output is left)", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
        return fail(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc, 2)
    except (OSError, EOFError, pickle.UnpicklingError) as exc:  # file system, unreadable files
        return fail(_describe(exc), 2)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        if not exc.strerror:  # raised with a message of ours
            return str(exc)
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return f"{type(exc).__name__}: {exc}"

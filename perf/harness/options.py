"""Command-line options the scenarios share: concurrency levels, rounds and their length,
the model and batch size, and the baseline install measured beside this one."""

from __future__ import annotations

import argparse
from typing import Sequence

from .processes import THIS_BUILD, Build


class _Repeated(argparse.Action):
    """An option given again and again; the first one given replaces the default list."""

    def __call__(self, parser, namespace, value, option_string=None) -> None:
        current = getattr(namespace, self.dest)
        setattr(namespace, self.dest, [value] if current is self.default else [*current, value])


def add_levels(parser: argparse.ArgumentParser, default: Sequence[int]) -> None:
    parser.add_argument("-c", "--concurrency", type=int, action=_Repeated, default=list(default),
                        help=f"concurrency level, repeatable (default {' '.join(map(str, default))})")


def add_batch_sizes(parser: argparse.ArgumentParser, default: Sequence[int]) -> None:
    parser.add_argument("-b", "--batch-size", type=int, action=_Repeated, default=list(default),
                        help=f"rows per request, repeatable (default {' '.join(map(str, default))})")


def add_rounds(parser: argparse.ArgumentParser, rounds: int, seconds: float,
               warmup: float | None = None) -> None:
    parser.add_argument("--rounds", type=int, default=rounds,
                        help=f"alternating rounds, medians over them (default {rounds})")
    parser.add_argument("--seconds", type=float, default=seconds,
                        help=f"measured seconds per level (default {seconds:g})")
    if warmup is not None:
        parser.add_argument("--warmup", type=float, default=warmup,
                            help=f"unmeasured seconds before each level (default {warmup:g})")


def add_model(parser: argparse.ArgumentParser, default: str = "simple") -> None:
    parser.add_argument("--model", default=default, help=f"model to load (default {default})")
    parser.add_argument("-b", "--batch-size", type=int, default=1,
                        help="batch size of each request (default 1)")


def add_processes(parser: argparse.ArgumentParser, default: int) -> None:
    parser.add_argument("--processes", type=int, default=default,
                        help=f"client processes, the load split between them (default {default})")


def add_baseline(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--baseline-python", metavar="PYTHON",
                        help=f"interpreter of another pyserver install ({what}), served beside "
                             f"this one")
    parser.add_argument("--baseline-pythonpath", metavar="DIR",
                        help="a folder with another pyserver install (pip install --target), put "
                             "first on the baseline server's PYTHONPATH")


def baseline_build(args: argparse.Namespace) -> Build | None:
    if not (args.baseline_python or args.baseline_pythonpath):
        return None
    return Build(args.baseline_python or THIS_BUILD.python, args.baseline_pythonpath or "")

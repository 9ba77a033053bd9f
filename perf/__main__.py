"""``python -m perf <scenario> [options]`` runs one scenario; ``list`` (or nothing) lists them."""

from __future__ import annotations

import argparse
import sys

from .scenarios import SCENARIOS, load, summary


def listing() -> str:
    width = max(map(len, SCENARIOS))
    lines = ["usage: python -m perf <scenario> [options]   (python -m perf <scenario> -h)", ""]
    lines += [f"  {name:<{width}}  {summary(name)}" for name in SCENARIOS]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("list", "-h", "--help"):
        print(listing())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SCENARIOS:
        print(f"unknown scenario '{name}'\n\n{listing()}", file=sys.stderr)
        return 2
    module = load(name)
    parser = argparse.ArgumentParser(prog=f"python -m perf {name}", description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    return module.run(parser.parse_args(rest)) or 0


if __name__ == "__main__":
    sys.exit(main())

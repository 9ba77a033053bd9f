"""The response cache's key hash in this process: the core's KeyHash against Python's hash().

``_core.CacheKey`` (csrc/key_hash.cc) and Python's ``hash()`` (SipHash) of fresh byte
strings of 64 B, 4 KiB and 588 KiB, and the comparison of two equal keys (what a hit
does); best of 5, µs per key.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Callable, Iterable

from ..harness.report import table

SIZES = (64, 4096, 602112)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repetitions", type=int, default=5, help="best of (default 5)")


def per_item_s(call: Callable[[object], object], items: Iterable[object], count: int) -> float:
    start = time.perf_counter()
    for item in items:
        call(item)
    return (time.perf_counter() - start) / count


def run(args: argparse.Namespace) -> int:
    from pyserver import _core

    rows = []
    for size in SIZES:
        data = os.urandom(size)
        count = 20000 if size < 10000 else 300
        one, other = _core.CacheKey(data), _core.CacheKey(bytes(bytearray(data)))
        best = [float("inf")] * 3
        for _ in range(args.repetitions):
            # fresh copies every time: bytes caches its hash()
            keyhash = per_item_s(_core.CacheKey, [bytes(bytearray(data)) for _ in range(count)],
                                 count)
            siphash = per_item_s(hash, [bytes(bytearray(data)) for _ in range(count)], count)
            compare = per_item_s(lambda _: one == other, range(count), count)
            best = [min(b, v) for b, v in zip(best, (keyhash, siphash, compare))]
        rows.append([size, *(f"{b * 1e6:.2f}" for b in best)])
    print(table(["key bytes", "CacheKey µs", "hash() µs", "compare equal keys µs"], rows))
    return 0

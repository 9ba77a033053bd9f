#!/usr/bin/env python3
"""Add and subtract two vectors with the example store's ``simple`` model
(INPUT0, INPUT1 -> OUTPUT0 = sum, OUTPUT1 = difference; INT32 or FP32 [16]).

    python examples/simple_client.py                       # HTTP, localhost:8000
    python examples/simple_client.py -i grpc -u localhost:8001

Prints each element's sum and difference, checks them, and exits non-zero
with one line on stderr on any failure.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from pyserver.client import NUMPY_DTYPES, InferenceServerClient, InferenceServerException


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--model-name", default="simple",
                        help="add/sub model (default simple)")
    parser.add_argument("-u", "--url", default=None, help="server host:port")
    parser.add_argument("-i", "--protocol", choices=["http", "grpc", "HTTP", "gRPC", "GRPC"],
                        default="http", help="protocol (default http)")
    parser.add_argument("-t", "--timeout", type=float, default=60.0, help="seconds per call")
    args = parser.parse_args(argv)
    protocol = args.protocol.lower()
    url = args.url or ("localhost:8001" if protocol == "grpc" else "localhost:8000")
    try:
        with InferenceServerClient(url, protocol, timeout=args.timeout) as client:
            if not client.is_live():
                raise InferenceServerException(6, f"server at {url} is not live")
            config = client.get_model_config(args.model_name)
            dtype = NUMPY_DTYPES[config.input[0].data_type]
            a = np.arange(16).astype(dtype)
            b = np.ones(16, dtype=dtype)
            if config.max_batch_size > 0:
                a, b = a[None], b[None]
            result = client.infer(args.model_name, {"INPUT0": a, "INPUT1": b},
                                  ["OUTPUT0", "OUTPUT1"])
            total, diff = (result.raw[n].reshape(-1) for n in ("OUTPUT0", "OUTPUT1"))
            for x, y, s, d in zip(a.reshape(-1), b.reshape(-1), total, diff):
                print(f"{x} + {y} = {s}")
                print(f"{x} - {y} = {d}")
                if s != x + y or d != x - y:
                    print(f"error: incorrect result {s}, {d} for {x}, {y}", file=sys.stderr)
                    return 1
    except InferenceServerException as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

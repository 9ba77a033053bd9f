#!/usr/bin/env python3
"""Classify one or more images with only the generated v1 gRPC stubs
(``pyserver.protos``), no client library: Status for the model config,
then one Infer with a classification output.

    python examples/grpc_image_client.py -u localhost:8001 -m image_classifier -c 3 images/noise.png

Failures print one line on stderr and exit with status 1.
"""

from __future__ import annotations

import argparse
import sys

import grpc
import numpy as np

from pyserver.protos import grpc_service_pb2 as gs
from pyserver.protos import grpc_service_pb2_grpc
from pyserver.protos import model_config_pb2 as mc
from pyserver.protos import request_status_pb2 as rs


class Failure(Exception):
    pass


def check(status: rs.RequestStatus) -> None:
    if status.code != rs.SUCCESS:
        raise Failure(f"[{rs.RequestStatusCode.Name(status.code)}] {status.msg}")


def load(path: str, config: mc.ModelConfig, scaling: str) -> np.ndarray:
    from PIL import Image
    inp = config.input[0]
    nchw = inp.format == mc.ModelInput.FORMAT_NCHW
    if (len(inp.dims) != 3 or inp.data_type != mc.TYPE_FP32
            or inp.format == mc.ModelInput.FORMAT_NONE):
        raise Failure(f"model '{config.name}' input is not an FP32 NCHW/NHWC image")
    c, h, w = inp.dims if nchw else (inp.dims[2], inp.dims[0], inp.dims[1])
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR),
                               dtype=np.float32).reshape(h, w, c)
    except OSError as exc:
        raise Failure(f"cannot read image {path}: {exc}") from None
    if scaling == "INCEPTION":
        array = array / 128.0 - 1.0
    elif scaling == "VGG":
        array = array - np.array([123.0, 117.0, 104.0][:c], np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1) if nchw else array)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--model-name", required=True)
    parser.add_argument("-u", "--url", default="localhost:8001", help="gRPC host:port")
    parser.add_argument("-c", "--classes", type=int, default=1)
    parser.add_argument("-s", "--scaling", choices=["NONE", "INCEPTION", "VGG"], default="NONE")
    parser.add_argument("-t", "--timeout", type=float, default=60.0)
    parser.add_argument("image", nargs="+")
    args = parser.parse_args(argv)
    try:
        with grpc.insecure_channel(args.url) as channel:
            stub = grpc_service_pb2_grpc.GRPCServiceStub(channel)
            status = stub.Status(gs.StatusRequest(model_name=args.model_name),
                                 timeout=args.timeout)
            check(status.request_status)
            config = status.server_status.model_status[args.model_name].config
            if len(config.input) != 1 or len(config.output) != 1:
                raise Failure(f"model '{args.model_name}' must have one input and one output")
            images = np.stack([load(p, config, args.scaling) for p in args.image])
            if config.max_batch_size == 0 and len(images) > 1:
                raise Failure(f"model '{args.model_name}' does not batch: give one image")
            request = gs.InferRequest(model_name=args.model_name, model_version=-1)
            request.meta_data.batch_size = len(images)
            request.meta_data.input.add(name=config.input[0].name)
            request.meta_data.output.add(name=config.output[0].name).cls.count = args.classes
            request.raw_input.append(images.tobytes())
            response = stub.Infer(request, timeout=args.timeout)
            check(response.request_status)
            for path, classes in zip(args.image, response.meta_data.output[0].batch_classes):
                print(f"Image '{path}':")
                for cls in classes.cls:
                    print(f"    {cls.idx} ({cls.label}) = {cls.value:.6f}")
    except grpc.RpcError as exc:
        print(f"error: gRPC {exc.code().name} from {args.url}: {exc.details()}", file=sys.stderr)
        return 1
    except (Failure, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Classify images with a v1 image classification model (the seed's
image_client): preprocess each image from the model's config (NCHW or NHWC,
channel count, --scaling), send them in batches of -b, print the top -c
classes with labels.

    python examples/image_client.py -m image_classifier -c 3 -s INCEPTION images/noise.png
    python examples/image_client.py -i grpc -u localhost:8001 -m image_classifier images/ -b 2

Any failure (unreachable server, unknown model, a file that is not an
image, ...) prints one line on stderr and exits with status 1.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from pyserver.client import InferenceServerClient, InferenceServerException
from pyserver.protos import model_config_pb2 as mc

NUMPY = {mc.TYPE_FP32: np.float32, mc.TYPE_FP16: np.float16, mc.TYPE_FP64: np.float64,
         mc.TYPE_UINT8: np.uint8, mc.TYPE_INT8: np.int8, mc.TYPE_INT32: np.int32}


class UsageError(Exception):
    """A problem with the model or the inputs, reported as one line."""


def parse_model(config: mc.ModelConfig) -> tuple[str, str, int, int, int, int, np.dtype]:
    """(input name, output name, c, h, w, format, dtype) of a one-input,
    one-output image model; UsageError otherwise."""
    if len(config.input) != 1 or len(config.output) != 1:
        raise UsageError(f"model '{config.name}' must have one input and one output, has "
                         f"{len(config.input)} and {len(config.output)}")
    inp, out = config.input[0], config.output[0]
    if sum(d != 1 for d in out.dims) > 1:
        raise UsageError(f"output '{out.name}' of '{config.name}' must be a vector of class "
                         f"scores, has dims {list(out.dims)}")
    if len(inp.dims) != 3:
        raise UsageError(f"input '{inp.name}' of '{config.name}' must have 3 dims (CHW or HWC), "
                         f"has {list(inp.dims)}")
    if inp.format == mc.ModelInput.FORMAT_NHWC:
        h, w, c = inp.dims
    elif inp.format == mc.ModelInput.FORMAT_NCHW:
        c, h, w = inp.dims
    else:
        raise UsageError(f"input '{inp.name}' of '{config.name}' has no image format "
                         f"(FORMAT_NCHW or FORMAT_NHWC)")
    if c not in (1, 3) or h <= 0 or w <= 0:
        raise UsageError(f"input '{inp.name}' dims {list(inp.dims)} are not an image shape")
    if inp.data_type not in NUMPY:
        raise UsageError(f"input '{inp.name}' type {mc.DataType.Name(inp.data_type)} "
                         f"is not supported")
    return inp.name, out.name, c, h, w, inp.format, np.dtype(NUMPY[inp.data_type])


def preprocess(path: str, c: int, h: int, w: int, fmt: int, dtype: np.dtype,
               scaling: str) -> np.ndarray:
    """The image at ``path`` as the model's input tensor (one batch element):
    converted to RGB (or L), resized to w x h, scaled, in CHW or HWC order."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as img:
            img = img.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
            array = np.asarray(img).astype(np.float32)
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise UsageError(f"cannot read image {path}: {exc}") from None
    if c == 1:
        array = array[:, :, None]
    if scaling == "INCEPTION":
        array = array / 128.0 - 1.0
    elif scaling == "VGG":
        mean = np.array([123.0, 117.0, 104.0] if c == 3 else [128.0], np.float32)
        array = array - mean
    if fmt == mc.ModelInput.FORMAT_NCHW:
        array = array.transpose(2, 0, 1)
    return np.ascontiguousarray(array.astype(dtype))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--model-name", required=True, help="model to run")
    parser.add_argument("-x", "--model-version", type=int, default=None,
                        help="version to run (default: latest)")
    parser.add_argument("-b", "--batch-size", type=int, default=1, help="images per request")
    parser.add_argument("-c", "--classes", type=int, default=1, help="top classes to print")
    parser.add_argument("-s", "--scaling", choices=["NONE", "INCEPTION", "VGG"], default="NONE",
                        help="pixel scaling (default NONE)")
    parser.add_argument("-u", "--url", default=None,
                        help="server host:port (default localhost:8000, or :8001 for grpc)")
    parser.add_argument("-i", "--protocol", choices=["http", "grpc", "HTTP", "gRPC", "GRPC"],
                        default="http", help="protocol (default http)")
    parser.add_argument("-t", "--timeout", type=float, default=60.0, help="seconds per call")
    parser.add_argument("image", nargs="+", help="image file(s) or a folder of images")
    args = parser.parse_args(argv)
    protocol = args.protocol.lower()
    url = args.url or ("localhost:8001" if protocol == "grpc" else "localhost:8000")
    try:
        if args.batch_size < 1 or args.classes < 1:
            raise UsageError("batch size and class count must be at least 1")
        files = []
        for item in args.image:
            if os.path.isdir(item):
                files += sorted(os.path.join(item, f) for f in os.listdir(item))
            else:
                files.append(item)
        if not files:
            raise UsageError("no images given")
        with InferenceServerClient(url, protocol, timeout=args.timeout) as client:
            config = client.get_model_config(args.model_name)
            name, output, c, h, w, fmt, dtype = parse_model(config)
            limit = max(config.max_batch_size, 1)
            if args.batch_size > limit:
                raise UsageError(f"batch size {args.batch_size} exceeds the model's maximum "
                                 f"{limit}")
            images = [preprocess(f, c, h, w, fmt, dtype, args.scaling) for f in files]
            # The last batch holds what is left (it may be smaller than -b).
            for start in range(0, len(images), args.batch_size):
                batch = np.stack(images[start:start + args.batch_size])
                if config.max_batch_size == 0:
                    batch = batch[0]
                result = client.infer(args.model_name, {name: batch}, {output: args.classes},
                                      version=args.model_version)
                for index, classes in enumerate(result.classes[output]):
                    print(f"Image '{files[start + index]}':")
                    for cls in classes:
                        print(f"    {cls.idx} ({cls.label}) = {cls.value:.6f}")
    except (InferenceServerException, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

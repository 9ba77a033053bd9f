"""Helpers for the backend tests: config text for any platform, a payload
for calling runtimes in-process, v1 infer round trips, and a numpy reference
of the Caffe2 example classifier (pyserver.examples.caffe2_models)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from conftest import infer, nv_infer_response, request_header, split_infer_body
from pyserver.examples.onnx_models import V1_TO_NUMPY


def platform_config(name: str, platform: str, max_batch_size: int, inputs: Sequence[str],
                    outputs: Sequence[str], *extra: str) -> str:
    """A config.pbtxt; ``platform`` "python" writes ``backend: "python"``."""
    lines = [f'name: "{name}"',
             'backend: "python"' if platform == "python" else f'platform: "{platform}"',
             f"max_batch_size: {max_batch_size}",
             f"input [ {', '.join(inputs)} ]", f"output [ {', '.join(outputs)} ]", *extra]
    return "\n".join(lines) + "\n"


def write_version(root: Path, name: str, config_text: str, files: dict[str, bytes | str],
                  version: int = 1) -> Path:
    """<root>/<name>/config.pbtxt and <root>/<name>/<version>/<files>; a file
    name ending in '/' is a folder written by the value, a callable(path)."""
    model_dir = root / name
    (model_dir / str(version)).mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(config_text)
    for filename, data in files.items():
        path = model_dir / str(version) / filename
        if callable(data):
            data(path)
        elif isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
    return model_dir


@dataclass
class Payload:
    """What a runtime's ``execute`` receives, for calling runtimes directly."""

    inputs: dict
    outputs: list = field(default_factory=list)


def serve(port: int, model: str, inputs: dict[str, np.ndarray], outputs: dict[str, str],
          batch_size: int) -> dict[str, np.ndarray]:
    """One v1 binary infer; ``outputs`` maps name -> v1 dtype. Returns the
    outputs as arrays of shape [batch_size, ...] (flat per batch element)."""
    raw_inputs = {name: _raw(array) for name, array in inputs.items()}
    header = request_header(batch_size, [{"name": name, "batch_byte_size": len(data)}
                                         for name, data in raw_inputs.items()], list(outputs))
    body = b"".join(raw_inputs.values())
    status, headers, data = infer(port, model, header, body)
    assert status == 200, (status, headers, data)
    raw, _ = split_infer_body(data, nv_infer_response(headers))
    result = {}
    for name, dtype in outputs.items():
        if dtype == "STRING":
            result[name] = _strings(raw[name])
        else:
            result[name] = np.frombuffer(raw[name], V1_TO_NUMPY[dtype]).reshape(batch_size, -1)
    return result


def _raw(array: np.ndarray) -> bytes:
    if array.dtype == np.object_:
        return b"".join(len(v).to_bytes(4, "little") + v for v in array.reshape(-1))
    return np.ascontiguousarray(array).tobytes()


def _strings(data: bytes) -> list[bytes]:
    out, offset = [], 0
    while offset < len(data):
        size = int.from_bytes(data[offset:offset + 4], "little")
        out.append(data[offset + 4:offset + 4 + size])
        offset += 4 + size
    return out


# -- numpy reference of pyserver.examples.caffe2_models.classifier -------------------

def _pad(x: np.ndarray, pad: int, value: float = 0.0) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=value)


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int = 0) -> np.ndarray:
    x = _pad(x, pad)
    n, _, h, wd = x.shape
    k = w.shape[2]
    out = np.zeros((n, w.shape[0], h - k + 1, wd - k + 1), np.float64)
    for i in range(k):
        for j in range(k):
            patch = x[:, :, i:i + out.shape[2], j:j + out.shape[3]]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out + b[None, :, None, None]


def max_pool(x: np.ndarray, k: int, stride: int) -> np.ndarray:
    n, c, h, w = x.shape
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    out = np.full((n, c, oh, ow), -np.inf)
    for i in range(k):
        for j in range(k):
            out = np.maximum(out, x[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride])
    return out


def average_pool_excluding_pad(x: np.ndarray, k: int, pad: int) -> np.ndarray:
    """Stride 1; padded cells count neither in the sum nor in the divisor."""
    ones = _pad(np.ones_like(x), pad)
    x = _pad(x, pad)
    h, w = x.shape[2] - k + 1, x.shape[3] - k + 1
    total = sum(x[:, :, i:i + h, j:j + w] for i in range(k) for j in range(k))
    count = sum(ones[:, :, i:i + h, j:j + w] for i in range(k) for j in range(k))
    return total / count


def lrn(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    c = x.shape[1]
    squares = np.zeros_like(x)
    half = (size - 1) // 2
    for ch in range(c):
        lo, hi = max(0, ch - half), min(c, ch + size - half)
        squares[:, ch] = (x[:, lo:hi] ** 2).sum(axis=1)
    return x / (bias + alpha / size * squares) ** beta


def classifier_reference(data: np.ndarray, w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The Caffe2 example classifier computed with numpy in float64."""
    x = data.astype(np.float64)
    x = conv2d(x, w["conv1_w"], w["conv1_b"], pad=1)
    x = ((x - w["bn_mean"][None, :, None, None]) / np.sqrt(w["bn_var"] + 1e-3)[None, :, None, None]
         * w["bn_scale"][None, :, None, None] + w["bn_bias"][None, :, None, None])
    x = np.maximum(x, 0)
    x = lrn(x, 3, 0.3, 0.75, 1.5)
    pool = max_pool(x, 2, 2)
    res = conv2d(pool, w["conv2_w"], w["conv2_b"]) + pool
    cat = np.concatenate([res, average_pool_excluding_pad(res, 3, 1)], axis=1)
    scaled = cat * w["channel_scale"][None, :, None, None]
    fc = scaled.reshape(len(x), -1) @ w["fc_w"].T.astype(np.float64) + w["fc_b"]
    e = np.exp(fc - fc.max(axis=1, keepdims=True))
    return {"fc": fc, "prob": e / e.sum(axis=1, keepdims=True)}

"""The ONNX models the scenarios serve, add/sub FP32[16] (``add``) and the 512 → 1000 → 1000
FP32 perceptron (``mlp``), each written to a store with direct scheduling or dynamic
batching."""

from __future__ import annotations

from pathlib import Path

from pyserver.examples import onnx_models
from pyserver.examples.store import config, tensor, write_model

MAX_BATCH = 32
IO = {
    "add": ([tensor("INPUT0", "FP32", [16]), tensor("INPUT1", "FP32", [16])],
            [tensor("OUTPUT0", "FP32", [16]), tensor("OUTPUT1", "FP32", [16])]),
    "mlp": ([tensor("INPUT0", "FP32", [512])], [tensor("OUTPUT0", "FP32", [1000])]),
}


def onnx_model(kind: str) -> bytes:
    return onnx_models.add_sub() if kind == "add" else onnx_models.mlp()


def dynamic_batching(delay_us: int) -> str:
    return (f"dynamic_batching {{ preferred_batch_size: [ 8, 16, {MAX_BATCH} ] "
            f"max_queue_delay_microseconds: {delay_us} }}")


def write_onnx_model(root: Path, name: str, kind: str, onnx: bytes,
                     batching_delay_us: int | None = None) -> None:
    """``onnx`` (an ``add`` or ``mlp`` model) as ``name`` in ``root``, with
    dynamic batching when a delay is given."""
    extra = () if batching_delay_us is None else (dynamic_batching(batching_delay_us),)
    write_model(root, name, config(name, MAX_BATCH, *IO[kind], *extra), {1: onnx})

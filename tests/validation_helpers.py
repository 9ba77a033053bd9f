"""Shared pieces of the validation tests (tests/http, tests/v2, tests/grpc):
a store with fixed-, variable- and string-shaped models, and the server's
peak memory."""

from __future__ import annotations

from pathlib import Path

from conftest import write_identity
from pyserver.examples import onnx_models
from pyserver.examples.store import LABELS, config, tensor, write_model

# A declared size far beyond what the body holds: 200 M string elements
# would take 1.5 GiB as a numpy object array.
HUGE_COUNT = 200_000_000
# Growth of the server's peak RSS a refused lie may cause (parsing, caches).
MEMORY_SLACK_BYTES = 64 * 1024 * 1024


def build_validation_store(root: Path) -> Path:
    """simple (add/sub FP32 [16]), classifier (FP32 [8] -> [10] with labels),
    floats (identity FP32 [-1]), grid (identity FP32 [-1, -1]), strings
    (identity STRING [-1]); all batch up to 8."""
    ins = [tensor(f"INPUT{i}", "FP32", [16]) for i in range(2)]
    outs = [tensor(f"OUTPUT{i}", "FP32", [16]) for i in range(2)]
    write_model(root, "simple", config("simple", 8, ins, outs),
                {1: onnx_models.add_sub("FP32", 16, batched=True)})
    write_model(root, "classifier", config(
        "classifier", 8, [tensor("INPUT", "FP32", [8])],
        [tensor("OUTPUT", "FP32", [10], label_filename="labels.txt")]),
        {1: onnx_models.classifier(8, 10)}, {"labels.txt": "\n".join(LABELS) + "\n"})
    write_identity(root, "floats", "FP32", (-1,))
    write_identity(root, "grid", "FP32", (-1, -1))
    write_identity(root, "strings", "STRING", (-1,))
    return root


def peak_rss_bytes(pid: int) -> int:
    """VmHWM of a process: the most resident memory it ever had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc status")

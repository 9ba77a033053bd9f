"""The scenarios of ``python -m perf``, one module each (``add_arguments(parser)`` and
``run(args)``), named after what they measure; a module's docstring opens with its summary."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

SCENARIOS: dict[str, str] = {
    "v1-http": "v1_http",
    "v1-inprocess": "v1_inprocess",
    "frontend-workers": "frontend_workers",
    "flag-ab": "flag_ab",
    "load": "load",
    "h11-echo": "h11_echo",
    "metrics-grpc": "metrics_grpc",
    "perf-analyzer": "perf_analyzer",
    "batching": "batching",
    "batcher": "batcher",
    "backends": "backends",
    "onnx-runtime": "onnx_runtime",
    "ort-micro": "ort_micro",
    "tf-call": "tf_call",
    "tf-native": "tf_native",
    "shm": "shm",
    "response-cache": "response_cache",
    "cache-key-hash": "cache_key_hash",
    "compare": "compare",
    "install-peers": "install_peers",
}


def load(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{SCENARIOS[name]}")


def summary(name: str) -> str:
    """The first paragraph of the scenario's docstring, read without importing it (some
    scenarios import TensorFlow)."""
    spec = importlib.util.find_spec(f"{__name__}.{SCENARIOS[name]}")
    doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text())) or ""
    return " ".join(doc.split("\n\n")[0].split())

"""A Python model that records every execution and can be held, for the
cancellation tests: while its gate file exists an execution waits (at most
HOLD_LIMIT_S), so one request occupies the single instance and the next ones
queue behind it. Each request carries its id as every element of INPUT0
(FP32, [1, 4]); the record file gets one JSON line per execution with the ids
of the requests it ran."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from conftest import wait_until
from pyserver.examples.store import tensor

HOLD_LIMIT_S = 30.0

MODEL = '''\
import json
import os
import time

import triton_python_backend_utils as pb_utils

RECORD = {record!r}
GATE = {gate!r}


class TritonPythonModel:
    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() for r in requests]
        with open(RECORD, "a") as record:
            record.write(json.dumps([int(x.ravel()[0]) for x in inputs]) + "\\n")
        deadline = time.monotonic() + {limit}
        while os.path.exists(GATE) and time.monotonic() < deadline:
            time.sleep(0.01)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]) for x in inputs]
'''


class SlowModel:
    """A held-able, recording Python model in a store (one instance)."""

    def __init__(self, root: Path, name: str, batching: str = "", max_batch_size: int = 4) -> None:
        self.name = name
        folder = root / name
        (folder / "1").mkdir(parents=True)
        self.record = folder / "executions.jsonl"
        self.gate = folder / "hold"
        self.record.touch()
        (folder / "config.pbtxt").write_text(
            f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch_size}\n'
            f'input [ {tensor("INPUT0", "FP32", [4])} ]\n'
            f'output [ {tensor("OUTPUT0", "FP32", [4])} ]\n'
            f'instance_group [ {{ count: 1 kind: KIND_CPU }} ]\n{batching}')
        (folder / "1" / "model.py").write_text(MODEL.format(
            record=str(self.record), gate=str(self.gate), limit=HOLD_LIMIT_S))

    @staticmethod
    def input(request_id: int) -> np.ndarray:
        return np.full((1, 4), request_id, np.float32)

    def hold(self) -> None:
        self.gate.touch()

    def release(self) -> None:
        self.gate.unlink(missing_ok=True)

    def executions(self) -> list[list[int]]:
        return [json.loads(line) for line in self.record.read_text().splitlines() if line]

    def executed_ids(self) -> list[int]:
        return [i for execution in self.executions() for i in execution]

    def wait_running(self, request_id: int, timeout: float = 20.0) -> None:
        """Until an execution holding ``request_id`` has started."""
        wait_until(lambda: request_id in self.executed_ids(), timeout,
                   what=f"request {request_id} running on {self.name}")


def settle(seconds: float = 0.4) -> None:
    """Time for the server to take in what a client just sent or dropped
    (a request to reach the queue, a reset to be noticed)."""
    time.sleep(seconds)


def cancellation_store(root: Path) -> tuple[SlowModel, SlowModel]:
    """``slow`` (direct scheduling) and ``slow_batched`` (dynamic batcher,
    batches of one, at most 2 queued), both one instance."""
    slow = SlowModel(root, "slow")
    batched = SlowModel(root, "slow_batched", max_batch_size=1, batching=(
        "dynamic_batching { default_queue_policy { max_queue_size: 2 } }\n"))
    return slow, batched

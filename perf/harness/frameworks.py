"""The frameworks called in this process with the server's session options (one intra-op
and one inter-op thread, no spinning): the ceilings and in-process columns of the scenarios."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .report import table
from .timing import mean_call_us


def onnxruntime_session(model: bytes | Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                providers=["CPUExecutionProvider"])


def onnxruntime_call_us(model: bytes | Path, batch: int, seconds: float) -> float:
    """Mean µs of one ``session.run`` on random FP32 inputs of ``batch`` rows."""
    session = onnxruntime_session(model)
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.random([batch, *i.shape[1:]]).astype(np.float32)
             for i in session.get_inputs()}
    return mean_call_us(lambda: session.run(None, feeds), seconds)


def onnxruntime_ceilings(models: Mapping[str, bytes], seconds: float,
                         batches: Sequence[int] = (1, 8, 32)) -> str:
    """A table of onnxruntime's in-process inferences/s per model and batch size."""
    return table(["model", "onnxruntime in-process, batch", "inferences/s"],
                 [[name, batch, f"{batch * 1e6 / onnxruntime_call_us(model, batch, seconds):.0f}"]
                  for name, model in models.items() for batch in batches])


def tensorflow_session(graphdef: bytes):
    """A TF1 session over a serialized GraphDef."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        definition = tf.compat.v1.GraphDef()
        definition.ParseFromString(graphdef)
        tf.import_graph_def(definition, name="")
    return tf.compat.v1.Session(graph=graph, config=tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=1, inter_op_parallelism_threads=1,
        use_per_session_threads=True))

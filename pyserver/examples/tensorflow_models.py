"""Small real TensorFlow models (GraphDef and SavedModel), made in code for
tests, examples and benchmarks. Needs the ``tensorflow`` extra."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _tf():
    import tensorflow as tf

    return tf


def mlp_weights(in_features: int, hidden: int, out_features: int, seed: int = 0):
    """Seeded (w1, b1, w2, b2) of a two-layer perceptron."""
    rng = np.random.default_rng(seed)
    return ((rng.standard_normal((in_features, hidden)) / np.sqrt(in_features)).astype(np.float32),
            rng.standard_normal(hidden).astype(np.float32),
            (rng.standard_normal((hidden, out_features)) / np.sqrt(hidden)).astype(np.float32),
            rng.standard_normal(out_features).astype(np.float32))


def graphdef_mlp(in_features: int = 64, hidden: int = 128, out_features: int = 32,
                 seed: int = 0, batched: bool = True) -> bytes:
    """OUTPUT0 = relu(INPUT0 @ w1 + b1) @ w2 + b2, FP32, as a frozen GraphDef."""
    tf = _tf()
    w1, b1, w2, b2 = mlp_weights(in_features, hidden, out_features, seed)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, in_features] if batched else
                                     [in_features], name="INPUT0")
        x2 = x if batched else tf.reshape(x, [1, in_features])
        h = tf.nn.relu(tf.matmul(x2, w1) + b1)
        y = tf.matmul(h, w2) + b2
        tf.identity(y if batched else tf.reshape(y, [out_features]), name="OUTPUT0")
    return graph.as_graph_def().SerializeToString()


def graphdef_add_sub(dtype: str = "float32", dims: int = 16) -> bytes:
    """OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1, batched."""
    tf = _tf()
    graph = tf.Graph()
    with graph.as_default():
        a = tf.compat.v1.placeholder(dtype, [None, dims], name="INPUT0")
        b = tf.compat.v1.placeholder(dtype, [None, dims], name="INPUT1")
        tf.identity(a + b, name="OUTPUT0")
        tf.identity(a - b, name="OUTPUT1")
    return graph.as_graph_def().SerializeToString()


def graphdef_strings() -> bytes:
    """OUTPUT0 = upper(INPUT0) (TYPE_STRING), OUTPUT1 = byte length (INT32)."""
    tf = _tf()
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.string, [None, None], name="INPUT0")
        tf.identity(tf.strings.upper(x), name="OUTPUT0")
        tf.identity(tf.strings.length(x), name="OUTPUT1")
    return graph.as_graph_def().SerializeToString()


def savedmodel_mlp(path: Path, in_features: int = 64, hidden: int = 128,
                   out_features: int = 32, seed: int = 0) -> Path:
    """A TF2 SavedModel whose ``serving_default`` signature maps INPUT0 to
    OUTPUT0 (the same network as ``graphdef_mlp``) and also gives HIDDEN."""
    tf = _tf()
    w1, b1, w2, b2 = (tf.Variable(v) for v in mlp_weights(in_features, hidden, out_features,
                                                          seed))

    class Mlp(tf.Module):
        def __init__(self):
            super().__init__()
            self.w1, self.b1, self.w2, self.b2 = w1, b1, w2, b2

        @tf.function(input_signature=[tf.TensorSpec([None, in_features], tf.float32)])
        def serve(self, INPUT0):  # noqa: N803 - the signature key is the argument name
            h = tf.nn.relu(tf.matmul(INPUT0, self.w1) + self.b1)
            return {"OUTPUT0": tf.matmul(h, self.w2) + self.b2, "HIDDEN": h}

    module = Mlp()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return Path(path)

"""A real image classifier for the example store, built from what the
``onnx`` package ships: ``onnx/backend/test/data/light/light_squeezenet.onnx``
(SqueezeNet 1.0 from the ONNX model zoo, "light" form: some weights are
stored, the others replaced by ``ConstantOfShape`` fills).

The fills would make every class score equal, so :func:`squeezenet` swaps
each of them for a seeded He-normal initializer of the same shape, and
makes the batch dimension symbolic so the model batches. Nothing is
downloaded; the result is deterministic for a seed.

Contract: ``squeezenet()`` returns serialized ONNX bytes with input
``data_0`` FP32 [batch, 3, 224, 224] (NCHW) and output ``softmaxout_1``
FP32 [batch, 1000, 1, 1] (a softmax over 1000 classes), or raises
:class:`ModelUnavailable` when the ``onnx`` package or its light model is
missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

NAME = "image_classifier"
INPUT = "data_0"
OUTPUT = "softmaxout_1"
CLASSES = 1000
CHANNELS, HEIGHT, WIDTH = 3, 224, 224
LABEL_FILE = "labels.txt"
GAIN = 1.3  # variance gain of the generated weights: keeps the softmax unsaturated


class ModelUnavailable(RuntimeError):
    """The onnx package, or the light model it ships, is not installed."""


def light_model_path(name: str = "light_squeezenet.onnx") -> Path:
    """Path of one of the onnx package's light models; ModelUnavailable if absent."""
    try:
        import onnx
    except ImportError as exc:
        raise ModelUnavailable(f"the onnx package is not installed ({exc})") from None
    path = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light" / name
    if not path.is_file():
        raise ModelUnavailable(f"{path} is not in the installed onnx package")
    return path


def squeezenet(seed: int = 0) -> bytes:
    """SqueezeNet with generated weights (see the module docstring)."""
    path = light_model_path()
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    shapes = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    rng = np.random.default_rng(seed)
    kept = []
    for node in graph.node:
        if node.op_type != "ConstantOfShape":
            kept.append(node)
            continue
        shape = [int(d) for d in shapes[node.input[0]]]
        if len(shape) > 1:
            fan_in = int(np.prod(shape[1:]))
            value = rng.standard_normal(shape) * np.sqrt(GAIN / fan_in)
        else:
            value = rng.standard_normal(shape) * 0.01
        array = value.astype(np.float32)
        graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
        graph.input.append(onnx.helper.make_tensor_value_info(
            node.output[0], onnx.TensorProto.FLOAT, shape))
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    for info in [i for i in graph.input if i.name not in used]:
        graph.input.remove(info)
    ends = ([i for i in graph.input if i.name == INPUT]
            + [o for o in graph.output if o.name == OUTPUT])
    for info in ends:
        info.type.tensor_type.shape.dim[0].dim_param = "batch"
    del graph.value_info[:]
    return model.SerializeToString()


def labels() -> list[str]:
    """One generated label per class, line i = class i."""
    return [f"class_{i:04d}" for i in range(CLASSES)]


def config(max_batch_size: int = 8) -> str:
    """config.pbtxt of the image classifier (FORMAT_NCHW, labelled output)."""
    return (
        f'name: "{NAME}"\n'
        'platform: "onnxruntime_onnx"\n'
        f"max_batch_size: {max_batch_size}\n"
        f'input [ {{ name: "{INPUT}" data_type: TYPE_FP32 format: FORMAT_NCHW '
        f"dims: [ {CHANNELS}, {HEIGHT}, {WIDTH} ] }} ]\n"
        f'output [ {{ name: "{OUTPUT}" data_type: TYPE_FP32 dims: [ {CLASSES}, 1, 1 ] '
        f'label_filename: "{LABEL_FILE}" }} ]\n'
    )

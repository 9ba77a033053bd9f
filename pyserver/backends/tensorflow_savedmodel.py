"""TensorFlow SavedModel backend (platform ``tensorflow_savedmodel``, folder
``model.savedmodel/``), run by the core's native TensorFlow runtime
(csrc/tensorflow_runtime.h), like ``tensorflow_graphdef``.

Config inputs and outputs name the keys of one signature: ``serving_default``
of the ``serve`` graph unless the config sets the parameters
``TF_SIGNATURE_DEF`` / ``TF_GRAPH_TAG`` (Triton's names).
"""

from __future__ import annotations

from pathlib import Path

from pyserver import _core
from pyserver.backends import tf_c_api as tf
from pyserver.backends.tensorflow_graphdef import device_of, parameter, session_config
from pyserver.errors import Code, ServerError
from pyserver.protos import model_config_pb2 as mc
from pyserver.protos import tensorflow_session_pb2 as tfs

SIGNATURE_PARAMETER = "TF_SIGNATURE_DEF"
TAG_PARAMETER = "TF_GRAPH_TAG"
DEFAULT_SIGNATURE = "serving_default"
DEFAULT_TAG = "serve"


def signature_tensor_names(meta_graph: bytes, config: mc.ModelConfig,
                           signature_key: str) -> dict[str, str]:
    """Config tensor name -> graph tensor name, through the signature."""
    parsed = tfs.MetaGraphDef.FromString(meta_graph)
    if signature_key not in parsed.signature_def:
        raise ServerError(Code.INVALID_ARG, f"the SavedModel has no signature '{signature_key}'; "
                          f"it has {', '.join(sorted(parsed.signature_def)) or 'none'}")
    signature = parsed.signature_def[signature_key]
    names = {}
    for kind, tensors, keys in (("input", config.input, signature.inputs),
                                ("output", config.output, signature.outputs)):
        for tensor in tensors:
            if tensor.name not in keys:
                raise ServerError(Code.INVALID_ARG, f"signature '{signature_key}' has no {kind} "
                                  f"'{tensor.name}'; it has {', '.join(sorted(keys))}")
            names[tensor.name] = keys[tensor.name].name
    return names


def load_native(config: mc.ModelConfig, model_path: Path, instance: mc.ModelInstanceGroup,
                device_id: int, pool: _core.HostMemoryPool) -> _core.NativeRuntime:
    if not (model_path / "saved_model.pb").is_file():
        raise ServerError(Code.INVALID_ARG,
                          f"'{model_path}' is not a SavedModel folder (no saved_model.pb)")
    device, core_device = device_of(instance, device_id)
    tags = [t for t in parameter(config, TAG_PARAMETER, DEFAULT_TAG).split(",") if t]
    session = _core.tensorflow_session(tf.library_path(), session_config(config, device),
                                       saved_model=str(model_path), tags=tags)
    names = signature_tensor_names(
        session.meta_graph, config, parameter(config, SIGNATURE_PARAMETER, DEFAULT_SIGNATURE))
    return _core.load_tensorflow(config, session,
                                 [names[t.name] for t in (*config.input, *config.output)],
                                 "SavedModel", core_device, pool)

"""Validation of an InferenceRequest against a model version's config, and
the core payload and InferenceResponse built from it.

A plan is built once per request signature (see
InferenceRequest.signature) and model version, then reused: the hot path
is a dict lookup, numpy views over the request's buffers and one output
list. Every size, count and shape product is checked here before any
tensor is built (pyserver.api.limits).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyserver import tensors
from pyserver.api import datatypes
from pyserver.api.limits import (MAX_DIMS, MAX_LIST_DEPTH, MAX_TENSOR_BYTES, UINT32_MAX,
                                 UINT64_MAX, is_int)
from pyserver.api.request import InferenceRequest, InferInput
from pyserver.api.response import Class, InferenceResponse, InferOutput
from pyserver.errors import internal, invalid_arg
from pyserver.protos import model_config_pb2 as mc
from pyserver.repository.manager import ModelVersion

MAX_CACHED_PLANS = 1024
_BUFFERS = (bytes, bytearray, memoryview)


class InferPayload:
    """What a runtime gets: the whole batch of each input, and the output
    names it must produce. The scheduler also reads ``shape_key`` (requests
    with different keys are never batched together), ``priority`` and
    ``timeout_us`` (the request's queue timeout, 0 = none), and for
    sequence models ``sequence_id`` (an int or a str; 0 / "" = none),
    ``sequence_start`` and ``sequence_end``."""

    __slots__ = ("inputs", "outputs", "shape_key", "priority", "timeout_us", "sequence_id",
                 "sequence_start", "sequence_end")

    def __init__(self, inputs: dict[str, np.ndarray], outputs: list[str], shape_key: int = 0,
                 priority: int = 0, timeout_us: int = 0) -> None:
        self.inputs = inputs
        self.outputs = outputs
        self.shape_key = shape_key
        self.priority = priority
        self.timeout_us = timeout_us
        self.sequence_id: int | str = 0
        self.sequence_start = False
        self.sequence_end = False


class InputPlan:
    __slots__ = ("name", "data_type", "datatype", "dtype", "shape", "count", "byte_size")

    def __init__(self, name: str, data_type: int, shape: tuple[int, ...], count: int,
                 byte_size: int) -> None:
        self.name = name
        self.data_type = data_type                    # model-config DataType
        self.datatype = datatypes.NAMES[data_type]    # server API name
        self.dtype = tensors.NUMPY_DTYPES[data_type]
        self.shape = shape          # what the runtime receives, batch dim included
        self.count = count          # elements in the whole batch
        self.byte_size = byte_size  # expected bytes; BYTES: the declared size (0 = any)


class OutputPlan:
    __slots__ = ("name", "data_type", "datatype", "dtype", "cls_count", "dims", "reshape")

    def __init__(self, name: str, data_type: int, cls_count: int, dims: tuple[int, ...],
                 reshape: bool) -> None:
        self.name = name
        self.data_type = data_type
        self.datatype = datatypes.NAMES[data_type]
        self.dtype = tensors.NUMPY_DTYPES[data_type]
        self.cls_count = cls_count    # 0 = the tensor itself
        self.dims = dims              # config dims (may hold -1)
        self.reshape = reshape        # runtime shape differs from dims


class InferPlan:
    """A validated request signature for one model version."""

    __slots__ = ("version", "batch_size", "batched", "inputs", "outputs", "output_names",
                 "shape_key", "priority", "timeout_us", "cache", "_layout", "_layout_size")

    def __init__(self, version: ModelVersion, batch_size: int, batched: bool,
                 inputs: list[InputPlan], outputs: list[OutputPlan], priority: int,
                 timeout_us: int, from_input_data: tuple[bool, ...] = ()) -> None:
        self.version = version
        self.batch_size = batch_size
        self.batched = batched
        self.inputs = inputs
        self.outputs = outputs
        self.output_names = [o.name for o in outputs]
        # equal for requests whose non-batch input shapes agree
        self.shape_key = hash(tuple(i.shape[1:] if batched else i.shape for i in inputs)) \
            & (2**63 - 1)
        self.priority = priority
        self.timeout_us = timeout_us
        self.cache: dict = {}  # front ends' memoized encodings (InferenceResponse.cache)
        # Every input fixed-size and in one input_data buffer (v1 HTTP): where
        # each lies in it, so that a payload is one size check and views.
        self._layout = None
        self._layout_size = 0
        if from_input_data and all(from_input_data) and all(
                i.data_type != mc.TYPE_STRING for i in inputs):
            layout = []
            offset = 0
            for spec in inputs:
                layout.append((spec.name, spec.dtype, spec.count, offset, spec.shape))
                offset += spec.byte_size
            self._layout = tuple(layout)
            self._layout_size = offset

    # -- request -> payload -----------------------------------------------------------

    def payload(self, request: InferenceRequest) -> InferPayload:
        """The request's tensors in the validated shapes. Raises
        ServerError(INVALID_ARG) when the data does not match them; nothing
        is allocated before the sizes are checked."""
        source = request.input_data
        layout = self._layout
        if layout is not None and isinstance(source, _BUFFERS) and (
                source.nbytes if type(source) is memoryview else len(source)) == \
                self._layout_size:
            return InferPayload({name: np.frombuffer(source, dtype, count, offset).reshape(shape)
                                 for name, dtype, count, offset, shape in layout},
                                self.output_names, self.shape_key, self.priority,
                                self.timeout_us)
        inputs = {}
        if source is None:
            for spec, given in zip(self.inputs, request.inputs):
                inputs[spec.name] = _tensor(spec, given.data)
        elif isinstance(source, _BUFFERS):
            view = source if type(source) is memoryview else memoryview(source)
            if view.itemsize != 1:
                view = view.cast("B")
            offset = 0
            total = len(view)
            for spec, given in zip(self.inputs, request.inputs):
                if given.data is not None:
                    inputs[spec.name] = _tensor(spec, given.data)
                    continue
                end = offset + spec.byte_size
                if end > total:
                    raise invalid_arg(f"unexpected size {total - offset} for input "
                                      f"'{spec.name}', expecting {spec.byte_size}")
                inputs[spec.name] = _tensor(spec, view[offset:end])
                offset = end
            if offset != total:
                raise invalid_arg(f"unexpected additional input data: {total - offset} bytes "
                                  f"after the last input")
        else:
            buffers = list(source)
            wanted = sum(1 for given in request.inputs if given.data is None)
            if len(buffers) < wanted:
                raise invalid_arg(f"expected tensor data for at least {wanted} inputs, "
                                  f"got {len(buffers)}")
            position = 0
            for spec, given in zip(self.inputs, request.inputs):
                data = given.data
                if data is None:
                    data = buffers[position]
                    position += 1
                inputs[spec.name] = _tensor(spec, data)
        return InferPayload(inputs, self.output_names, self.shape_key, self.priority,
                            self.timeout_us)

    # -- result -> response ------------------------------------------------------------

    def response(self, request: InferenceRequest, result: dict[str, Any]) -> InferenceResponse:
        """The runtime's result as the response to ``request``. Raises
        ServerError(INTERNAL) when the runtime broke the model's contract."""
        outputs = []
        version = self.version
        for spec in self.outputs:
            array = result.get(spec.name)
            if array is None:
                raise internal(f"model did not produce output '{spec.name}'")
            array = self._checked_output(spec, array)
            if spec.cls_count:
                outputs.append(self._classify(spec, array, version.labels.get(spec.name, ())))
            else:
                outputs.append(InferOutput(spec.name, spec.datatype, array))
        return InferenceResponse(version.name, version.version, request.id, outputs, None,
                                 self.batch_size, self.batched, self.cache)

    def _checked_output(self, spec: OutputPlan, array: Any) -> np.ndarray:
        if type(array) is not np.ndarray:
            array = np.asarray(array)
        if spec.data_type == mc.TYPE_STRING:
            if array.dtype != np.object_ and array.dtype.kind not in "SU":
                raise internal(f"output '{spec.name}' is {array.dtype}, config says TYPE_STRING")
        elif array.dtype != spec.dtype:
            raise internal(f"output '{spec.name}' is {array.dtype}, config says "
                           f"{tensors.type_name(spec.data_type)}")
        if self.batched and (array.ndim == 0 or array.shape[0] != self.batch_size):
            raise internal(f"output '{spec.name}' has shape {list(array.shape)}, expected batch "
                           f"size {self.batch_size} first")
        if spec.reshape and -1 not in spec.dims:
            target = (self.batch_size, *spec.dims) if self.batched else spec.dims
            try:
                array = array.reshape(target)
            except ValueError:
                raise internal(f"output '{spec.name}' has shape {list(array.shape)}, which does "
                               f"not reshape to {list(target)}") from None
        return array

    def _classify(self, spec: OutputPlan, array: np.ndarray, labels) -> InferOutput:
        """Top-k per batch element: descending score, index in the
        flattened element, label from the label file's line at that index."""
        rows = array.reshape(self.batch_size if self.batched else 1, -1)
        k = min(spec.cls_count, rows.shape[1])
        classes = []
        text = np.empty((rows.shape[0], k), dtype=np.object_)
        for r, row in enumerate(rows):
            top = np.argsort(-row.astype(np.float64), kind="stable")[:k]
            entries = []
            for j, idx in enumerate(top.tolist()):
                value = float(np.float32(row[idx]))
                has_label = idx < len(labels)
                label = labels[idx] if has_label else ""
                entries.append(Class(idx, value, label))
                text[r, j] = (f"{value:f}:{idx}:{label}" if has_label
                              else f"{value:f}:{idx}").encode()
            classes.append(entries)
        return InferOutput(spec.name, "BYTES", text if self.batched else text.reshape(k), classes,
                           spec.datatype)


# -- tensors --------------------------------------------------------------------------

def _tensor(spec: InputPlan, data: Any) -> np.ndarray:
    if isinstance(data, _BUFFERS):
        return _from_buffer(spec, data)
    if isinstance(data, np.ndarray):
        return _from_array(spec, data)
    if isinstance(data, list):
        return _from_list(spec, data)
    if data is None:
        raise invalid_arg(f"input '{spec.name}' has no data")
    if isinstance(data, (int, float, str, bool)) and spec.count == 1:
        return _from_list(spec, [data])
    raise invalid_arg(f"input '{spec.name}': data must be bytes, an array or a list")


def _from_buffer(spec: InputPlan, data) -> np.ndarray:
    view = data if type(data) is memoryview else memoryview(data)
    if view.itemsize != 1:
        view = view.cast("B")
    size = len(view)
    if spec.data_type == mc.TYPE_STRING:
        if spec.byte_size and size != spec.byte_size:
            raise invalid_arg(f"unexpected size {size} for input '{spec.name}', "
                              f"expecting {spec.byte_size}")
        if spec.count * 4 > size:  # every element has a 4-byte length
            raise invalid_arg(f"input '{spec.name}': {size} bytes cannot hold {spec.count} "
                              f"string elements")
        return tensors.deserialize_strings(view, spec.count, spec.name).reshape(spec.shape)
    if size != spec.byte_size:
        raise invalid_arg(f"unexpected size {size} for input '{spec.name}', expecting "
                          f"{spec.byte_size}")
    return np.frombuffer(view, dtype=spec.dtype).reshape(spec.shape)


def _from_array(spec: InputPlan, array: np.ndarray) -> np.ndarray:
    if array.size != spec.count:
        raise invalid_arg(f"unexpected number of elements {array.size} for input '{spec.name}', "
                          f"expecting {spec.count}")
    if spec.data_type == mc.TYPE_STRING:
        if array.dtype.kind not in "OSU":
            raise invalid_arg(f"input '{spec.name}' of type BYTES needs bytes or str elements, "
                              f"got {array.dtype}")
        return _strings(spec, array.reshape(-1).tolist()).reshape(spec.shape)
    if array.dtype != spec.dtype:
        raise invalid_arg(f"input '{spec.name}' holds {array.dtype}, the model expects "
                          f"{spec.datatype}")
    return np.ascontiguousarray(array).reshape(spec.shape)


def _from_list(spec: InputPlan, data: list) -> np.ndarray:
    flat = _flatten(spec, data)
    if len(flat) != spec.count:
        raise invalid_arg(f"unexpected number of elements {len(flat)} for input '{spec.name}', "
                          f"expecting {spec.count}")
    if spec.data_type == mc.TYPE_STRING:
        return _strings(spec, flat).reshape(spec.shape)
    if not all(type(item) in (int, float, bool) for item in flat):
        raise invalid_arg(f"input '{spec.name}': every element must be a number or a boolean "
                          f"for {spec.datatype}")
    try:
        return np.array(flat, dtype=spec.dtype).reshape(spec.shape)
    except (TypeError, ValueError, OverflowError):
        raise invalid_arg(f"input '{spec.name}': the data does not convert to "
                          f"{spec.datatype}") from None


def _strings(spec: InputPlan, items: list) -> np.ndarray:
    out = np.empty(len(items), dtype=np.object_)
    for i, item in enumerate(items):
        if isinstance(item, bytes):
            out[i] = item
        elif isinstance(item, str):
            out[i] = item.encode("utf-8", "surrogatepass")
        else:
            raise invalid_arg(f"input '{spec.name}' of type BYTES needs string elements")
    return out


def _flatten(spec: InputPlan, data: list) -> list:
    """Nested lists as one list, row-major, without recursion; deeper than
    MAX_LIST_DEPTH is refused. Stops once more elements than the input
    holds were seen."""
    if not any(type(item) is list for item in data):
        return data
    out: list = []
    stack = [iter(data)]
    limit = spec.count
    while stack:
        for item in stack[-1]:
            if type(item) is list:
                if len(stack) >= MAX_LIST_DEPTH:
                    raise invalid_arg(f"input '{spec.name}': data nests deeper than "
                                      f"{MAX_LIST_DEPTH} levels")
                stack.append(iter(item))
                break
            out.append(item)
            if len(out) > limit:
                return out
        else:
            stack.pop()
    return out


# -- plans ----------------------------------------------------------------------------

def plan_for(version: ModelVersion, request: InferenceRequest) -> InferPlan:
    """The cached plan for ``request``'s signature on ``version``; built
    and validated on first use. Raises ServerError (INVALID_ARG, or
    UNSUPPORTED) for a request the model cannot serve."""
    plans = version.plans
    key = request.cache_key()
    plan = plans.get(key)
    if plan is None:
        plan = build_plan(version, request)
        if len(plans) >= MAX_CACHED_PLANS:
            plans.clear()
        plans[key] = plan
    return plan


def build_plan(version: ModelVersion, request: InferenceRequest) -> InferPlan:
    """Validates everything of ``request`` but its data against the config."""
    config = version.config
    name = config.name
    batched = config.max_batch_size > 0
    priority, timeout_us = request.priority, request.timeout_us
    if not is_int(priority) or not 0 <= priority <= UINT32_MAX:
        raise invalid_arg(f"priority must be an integer from 0 to {UINT32_MAX}")
    if not is_int(timeout_us) or not 0 <= timeout_us <= UINT64_MAX:
        raise invalid_arg(f"timeout must be an integer from 0 to {UINT64_MAX} microseconds")
    given = list(request.inputs)
    for item in given:
        if not isinstance(item, InferInput) or not isinstance(item.name, str):
            raise invalid_arg("each input needs a name")
    batch_size = _batch_size(config, request, given)
    if len(given) != len(config.input):
        raise invalid_arg(f"expected {len(config.input)} inputs but got {len(given)} inputs "
                          f"for model '{name}'")
    config_inputs = {i.name: i for i in config.input}
    inputs = []
    seen = set()
    for item in given:
        model_input = config_inputs.get(item.name)
        if model_input is None:
            raise invalid_arg(f"unexpected inference input '{item.name}' for model '{name}'")
        if item.name in seen:
            raise invalid_arg(f"input '{item.name}' is given more than once")
        seen.add(item.name)
        inputs.append(_plan_input(config, model_input, item, request, batch_size))
    outputs = _plan_outputs(config, request)
    from_input_data = tuple(item.data is None for item in given) \
        if request.input_data is not None else ()
    return InferPlan(version, batch_size, batched, inputs, outputs, priority, timeout_us,
                     from_input_data)


def _batch_size(config: mc.ModelConfig, request: InferenceRequest, given: list) -> int:
    name = config.name
    batched = config.max_batch_size > 0
    batch_size = request.batch_size
    if batch_size is None:  # shapes carry the batch dimension
        if not batched:
            return 1
        for item in given:
            if item.shape is None or not item.shape:
                raise invalid_arg(f"input '{item.name}' of batching model '{name}' needs a "
                                  f"batch dimension in its shape")
            first = item.shape[0]
            if not is_int(first):
                raise invalid_arg(f"input '{item.name}': shape must be a list of integers")
            if batch_size is not None and first != batch_size:
                raise invalid_arg(f"input '{item.name}' batch size {first} differs from the "
                                  f"other inputs' {batch_size}")
            batch_size = first
        if batch_size is None:
            batch_size = 1
    elif not is_int(batch_size):
        raise invalid_arg("batch size must be an integer")
    if batch_size < 1:
        raise invalid_arg(f"inference request batch-size must be >= 1 for '{name}'")
    if batch_size != 1 and batch_size > config.max_batch_size:
        raise invalid_arg(f"inference request batch-size must be <= "
                          f"{max(config.max_batch_size, 1)} for '{name}'")
    return batch_size


def _plan_input(config: mc.ModelConfig, model_input: mc.ModelInput, item: InferInput,
                request: InferenceRequest, batch_size: int) -> InputPlan:
    name = item.name
    batched = config.max_batch_size > 0
    data_type = model_input.data_type
    if item.datatype is not None:
        expected = datatypes.NAMES[data_type]
        if item.datatype != expected:
            shown = item.datatype if isinstance(item.datatype, str) else "?"
            raise invalid_arg(f"inference input '{name}' data-type is '{shown[:32]}', but model "
                              f"'{config.name}' expects '{expected}'")
    config_dims = list(model_input.dims)
    shape = item.shape
    if shape is not None:
        if len(shape) > MAX_DIMS or not all(is_int(d) for d in shape):
            raise invalid_arg(f"input '{name}': shape must be a list of at most {MAX_DIMS} "
                              f"integers")
        if any(d < 0 for d in shape):
            raise invalid_arg(f"input '{name}' has a negative dimension in shape "
                              f"{_dims_text(shape)}")
        dims = list(shape[1:]) if batched and request.batch_size is None else list(shape)
        if len(dims) != len(config_dims) or any(
                c != -1 and c != d for c, d in zip(config_dims, dims)):
            raise invalid_arg(f"unexpected shape for input '{name}' for model '{config.name}'. "
                              f"Expected {_dims_text(config_dims)}, got {_dims_text(dims)}")
    elif -1 in config_dims:
        raise invalid_arg(f"model supports variable-size for input '{name}', request must "
                          f"specify input shape")
    else:
        dims = config_dims
    if model_input.HasField("reshape"):
        dims = list(model_input.reshape.shape)
    runtime_shape = tuple([batch_size] + dims) if batched else tuple(dims)
    count = 1
    for d in runtime_shape:
        count *= d
    itemsize = tensors.element_size(data_type) or 4  # BYTES: at least its length prefix
    largest = 1
    for d in runtime_shape:
        largest *= max(d, 1)
    if largest * itemsize > MAX_TENSOR_BYTES:
        raise invalid_arg(f"input '{name}': shape {_dims_text(list(runtime_shape))} declares more "
                          f"than {MAX_TENSOR_BYTES} bytes")
    declared = item.byte_size
    if declared is not None and (not is_int(declared) or not 0 <= declared <= UINT64_MAX):
        raise invalid_arg(f"input '{name}': batch_byte_size must be an integer from 0 to "
                          f"{UINT64_MAX}")
    if data_type == mc.TYPE_STRING:
        if item.data is None and request.input_data is not None and not declared and count > 0:
            raise invalid_arg(f"input '{name}' of type TYPE_STRING must give batch_byte_size")
        byte_size = declared or 0
    else:
        byte_size = count * itemsize
        if declared and declared != byte_size:
            raise invalid_arg(f"unexpected batch_byte_size {declared} for input '{name}', "
                              f"expecting {byte_size}")
    return InputPlan(name, data_type, runtime_shape, count, byte_size)


def _plan_outputs(config: mc.ModelConfig, request: InferenceRequest) -> list[OutputPlan]:
    config_outputs = {o.name: o for o in config.output}
    requested = [(o.name, 0) for o in config.output] if not request.outputs else [
        (o.name, o.classification) for o in request.outputs]
    outputs = []
    for name, cls_count in requested:
        if not isinstance(name, str):
            raise invalid_arg("each requested output needs a name")
        model_output = config_outputs.get(name)
        if model_output is None:
            raise invalid_arg(f"unexpected inference output '{name}' for model "
                              f"'{config.name}'")
        if not is_int(cls_count) or not 0 <= cls_count <= UINT32_MAX:
            raise invalid_arg(f"output '{name}': classification count must be an integer from "
                              f"0 to {UINT32_MAX}")
        if cls_count and model_output.data_type not in tensors.CLASSIFIABLE:
            raise invalid_arg(f"class result not available for output '{name}' due to "
                              f"unsupported type '{tensors.type_name(model_output.data_type)}'")
        outputs.append(OutputPlan(name, model_output.data_type, cls_count,
                                  tuple(model_output.dims), model_output.HasField("reshape")))
    return outputs


def rejected_batch_size(version: ModelVersion, request: InferenceRequest) -> int:
    """The batch size a refused request is counted under in statistics:
    what it declared, within the model's bounds."""
    declared = request.batch_size
    if declared is None and request.inputs:
        first = request.inputs[0]
        shape = getattr(first, "shape", None)
        declared = shape[0] if shape and version.config.max_batch_size > 0 else 1
    if not is_int(declared) or declared < 1:
        return 1
    return min(declared, max(version.config.max_batch_size, 1))


def _dims_text(dims) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"

"""TensorFlow's C API (``c_api.h``), called through ctypes.

The pip wheels of ``tensorflow`` and ``tensorflow-cpu`` ship the C API in
``libtensorflow_cc.so.2``; loading that library takes well under a second,
against several seconds for ``import tensorflow``, and a ``TF_SessionRun``
through ctypes costs a fraction of Python's ``Session.run`` (perf/RESULTS.md).
ctypes releases the GIL for every foreign call, so the session runs without it.

Only what the tensorflow_* backends need is declared. Every function that
takes a status is checked at once; ``Session`` owns its graph and session and
frees them in ``close``. A ``Session`` is used by one thread at a time.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pyserver.errors import Code, ServerError

LIBRARY_ENV = "PYSERVER_LIBTENSORFLOW"
_LIBRARY_NAMES = ("libtensorflow_cc.so.2", "libtensorflow.so.2")

# TF_DataType values (tensorflow/c/tf_datatype.h).
TF_FLOAT, TF_DOUBLE, TF_INT32, TF_UINT8, TF_INT16, TF_INT8, TF_STRING = 1, 2, 3, 4, 5, 6, 7
TF_INT64, TF_BOOL, TF_UINT16, TF_HALF, TF_UINT32, TF_UINT64 = 9, 10, 17, 19, 22, 23

NUMPY_TO_TF = {
    np.dtype(np.float32): TF_FLOAT, np.dtype(np.float64): TF_DOUBLE,
    np.dtype(np.int32): TF_INT32, np.dtype(np.uint8): TF_UINT8, np.dtype(np.int16): TF_INT16,
    np.dtype(np.int8): TF_INT8, np.dtype(np.int64): TF_INT64, np.dtype(np.bool_): TF_BOOL,
    np.dtype(np.uint16): TF_UINT16, np.dtype(np.float16): TF_HALF,
    np.dtype(np.uint32): TF_UINT32, np.dtype(np.uint64): TF_UINT64,
}
TF_TO_NUMPY = {tf: dtype for dtype, tf in NUMPY_TO_TF.items()}
TYPE_NAMES = {TF_FLOAT: "DT_FLOAT", TF_DOUBLE: "DT_DOUBLE", TF_INT32: "DT_INT32",
              TF_UINT8: "DT_UINT8", TF_INT16: "DT_INT16", TF_INT8: "DT_INT8",
              TF_STRING: "DT_STRING", TF_INT64: "DT_INT64", TF_BOOL: "DT_BOOL",
              TF_UINT16: "DT_UINT16", TF_HALF: "DT_HALF", TF_UINT32: "DT_UINT32",
              TF_UINT64: "DT_UINT64"}

_TSTRING_SIZE = 24  # sizeof(TF_TString) (tensorflow/core/platform/ctstring_internal.h)

_P = ctypes.c_void_p


class TF_Output(ctypes.Structure):
    _fields_ = [("oper", _P), ("index", ctypes.c_int)]


class TF_Buffer(ctypes.Structure):
    _fields_ = [("data", _P), ("length", ctypes.c_size_t), ("data_deallocator", _P)]


_BUFFER_P = ctypes.POINTER(TF_Buffer)
_OUTPUT_P = ctypes.POINTER(TF_Output)
_INT64_P = ctypes.POINTER(ctypes.c_int64)

_PROTOTYPES = {
    "TF_Version": (ctypes.c_char_p, []),
    "TF_NewStatus": (_P, []),
    "TF_DeleteStatus": (None, [_P]),
    "TF_GetCode": (ctypes.c_int, [_P]),
    "TF_Message": (ctypes.c_char_p, [_P]),
    "TF_NewBufferFromString": (_BUFFER_P, [ctypes.c_char_p, ctypes.c_size_t]),
    "TF_NewBuffer": (_BUFFER_P, []),
    "TF_DeleteBuffer": (None, [_BUFFER_P]),
    "TF_NewGraph": (_P, []),
    "TF_DeleteGraph": (None, [_P]),
    "TF_GraphOperationByName": (_P, [_P, ctypes.c_char_p]),
    "TF_OperationNumOutputs": (ctypes.c_int, [_P]),
    "TF_OperationOutputType": (ctypes.c_int, [TF_Output]),
    "TF_NewImportGraphDefOptions": (_P, []),
    "TF_DeleteImportGraphDefOptions": (None, [_P]),
    "TF_ImportGraphDefOptionsSetDefaultDevice": (None, [_P, ctypes.c_char_p]),
    "TF_GraphImportGraphDef": (None, [_P, _BUFFER_P, _P, _P]),
    "TF_NewSessionOptions": (_P, []),
    "TF_DeleteSessionOptions": (None, [_P]),
    "TF_SetConfig": (None, [_P, ctypes.c_char_p, ctypes.c_size_t, _P]),
    "TF_NewSession": (_P, [_P, _P, _P]),
    "TF_LoadSessionFromSavedModel": (_P, [_P, _BUFFER_P, ctypes.c_char_p,
                                          ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, _P,
                                          _BUFFER_P, _P]),
    "TF_CloseSession": (None, [_P, _P]),
    "TF_DeleteSession": (None, [_P, _P]),
    "TF_SessionRun": (None, [_P, _BUFFER_P, _OUTPUT_P, ctypes.POINTER(_P), ctypes.c_int,
                             _OUTPUT_P, ctypes.POINTER(_P), ctypes.c_int, ctypes.POINTER(_P),
                             ctypes.c_int, _BUFFER_P, _P]),
    "TF_AllocateTensor": (_P, [ctypes.c_int, _INT64_P, ctypes.c_int, ctypes.c_size_t]),
    "TF_DeleteTensor": (None, [_P]),
    "TF_TensorType": (ctypes.c_int, [_P]),
    "TF_NumDims": (ctypes.c_int, [_P]),
    "TF_Dim": (ctypes.c_int64, [_P, ctypes.c_int]),
    "TF_TensorByteSize": (ctypes.c_size_t, [_P]),
    "TF_TensorData": (_P, [_P]),
    "TF_StringInit": (None, [_P]),
    "TF_StringCopy": (None, [_P, ctypes.c_char_p, ctypes.c_size_t]),
    "TF_StringGetDataPointer": (_P, [_P]),
    "TF_StringGetSize": (ctypes.c_size_t, [_P]),
    "TF_StringDealloc": (None, [_P]),
}

_lib = None
_lib_lock = threading.Lock()


def library_path() -> Path:
    """Where TensorFlow's C library is: $PYSERVER_LIBTENSORFLOW, else inside
    the installed ``tensorflow`` package (found without importing it)."""
    override = os.environ.get(LIBRARY_ENV)
    if override:
        return Path(override)
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError(Code.UNAVAILABLE, "tensorflow is not installed "
                          "(pip install 'pyserver[tensorflow]')")
    for location in spec.submodule_search_locations:
        for name in _LIBRARY_NAMES:
            candidate = Path(location) / name
            if candidate.is_file():
                return candidate
    raise ServerError(Code.UNAVAILABLE, "the installed tensorflow package has no "
                      f"{' or '.join(_LIBRARY_NAMES)}")


def library() -> ctypes.CDLL:
    """TensorFlow's C library with the prototypes above, loaded once."""
    global _lib
    with _lib_lock:
        if _lib is None:
            # TensorFlow logs an INFO line per process unless told otherwise.
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
            path = library_path()
            try:
                lib = ctypes.CDLL(str(path))
            except OSError as exc:
                raise ServerError(Code.UNAVAILABLE, f"cannot load {path}: {exc}") from None
            for name, (restype, argtypes) in _PROTOTYPES.items():
                function = getattr(lib, name)
                function.restype = restype
                function.argtypes = argtypes
            _lib = lib
        return _lib


def version() -> str:
    return library().TF_Version().decode()


class Status:
    """A TF_Status; ``check`` raises its message as a ServerError."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        self.handle = lib.TF_NewStatus()

    def check(self, what: str, code: Code = Code.INTERNAL) -> None:
        if self._lib.TF_GetCode(self.handle) != 0:
            message = self._lib.TF_Message(self.handle).decode("utf-8", "replace")
            raise ServerError(code, f"{what}: {message}")

    def close(self) -> None:
        if self.handle:
            self._lib.TF_DeleteStatus(self.handle)
            self.handle = None


def session_config(intra_op_threads: int, inter_op_threads: int, device: str = "") -> bytes:
    """A serialized tensorflow.ConfigProto: per-session thread pools of the
    given sizes (sessions never share a pool, so instances run side by side)."""
    from pyserver.protos import tensorflow_session_pb2 as tfs

    config = tfs.ConfigProto(intra_op_parallelism_threads=intra_op_threads,
                             inter_op_parallelism_threads=inter_op_threads,
                             use_per_session_threads=True, allow_soft_placement=True)
    if device:
        config.gpu_options.allow_growth = True
    return config.SerializeToString()


def _split_tensor_name(name: str) -> tuple[str, int]:
    """'op:1' -> ('op', 1); 'op' -> ('op', 0)."""
    op, sep, index = name.rpartition(":")
    if sep and index.isdigit():
        return op, int(index)
    return name, 0


class Session:
    """A graph and a TF_Session over it, with tensors fed and fetched by name.

    ``run`` blocks in TensorFlow without the GIL. Not thread-safe: one
    instance thread calls it.
    """

    def __init__(self, lib: ctypes.CDLL, graph: int, session: int) -> None:
        self._lib = lib
        self._graph = graph
        self._session = session
        self._status = Status(lib)
        self._fetch_cache: dict[tuple[str, ...], tuple] = {}

    # -- construction -------------------------------------------------------

    @classmethod
    def from_graphdef(cls, graphdef: bytes, config: bytes, device: str = "") -> "Session":
        lib = library()
        status = Status(lib)
        graph = lib.TF_NewGraph()
        options = lib.TF_NewImportGraphDefOptions()
        buffer = lib.TF_NewBufferFromString(graphdef, len(graphdef))
        try:
            if device:
                lib.TF_ImportGraphDefOptionsSetDefaultDevice(options, device.encode())
            lib.TF_GraphImportGraphDef(graph, buffer, options, status.handle)
            status.check("tensorflow could not import the GraphDef", Code.INVALID_ARG)
            session = _new_session(lib, graph, config, status)
        except BaseException:
            lib.TF_DeleteGraph(graph)
            raise
        finally:
            lib.TF_DeleteBuffer(buffer)
            lib.TF_DeleteImportGraphDefOptions(options)
            status.close()
        return cls(lib, graph, session)

    @classmethod
    def from_saved_model(cls, export_dir: Path, tags: Sequence[str],
                         config: bytes) -> tuple["Session", bytes]:
        """The session and the serialized MetaGraphDef of the tagged graph."""
        lib = library()
        status = Status(lib)
        graph = lib.TF_NewGraph()
        options = lib.TF_NewSessionOptions()
        meta_graph = lib.TF_NewBuffer()
        tag_array = (ctypes.c_char_p * len(tags))(*(t.encode() for t in tags))
        try:
            lib.TF_SetConfig(options, config, len(config), status.handle)
            status.check("tensorflow rejected the session options")
            session = lib.TF_LoadSessionFromSavedModel(
                options, None, str(export_dir).encode(), tag_array, len(tags), graph,
                meta_graph, status.handle)
            status.check(f"tensorflow could not load the SavedModel '{export_dir}'",
                         Code.INVALID_ARG)
            contents = meta_graph.contents
            meta_graph_bytes = ctypes.string_at(contents.data, contents.length)
        except BaseException:
            lib.TF_DeleteGraph(graph)
            raise
        finally:
            lib.TF_DeleteBuffer(meta_graph)
            lib.TF_DeleteSessionOptions(options)
            status.close()
        return cls(lib, graph, session), meta_graph_bytes

    # -- graph queries ------------------------------------------------------

    def output(self, name: str) -> TF_Output:
        """The TF_Output of a tensor name ('op' or 'op:index'); raises if absent."""
        op_name, index = _split_tensor_name(name)
        op = self._lib.TF_GraphOperationByName(self._graph, op_name.encode())
        if not op:
            raise ServerError(Code.INVALID_ARG, f"the graph has no operation '{op_name}'")
        outputs = self._lib.TF_OperationNumOutputs(op)
        if index >= outputs:
            raise ServerError(Code.INVALID_ARG, f"operation '{op_name}' has {outputs} "
                              f"outputs; there is no output {index}")
        return TF_Output(op, index)

    def dtype(self, output: TF_Output) -> int:
        return self._lib.TF_OperationOutputType(output)

    # -- running ------------------------------------------------------------

    def prepare_feeds(self, names: Sequence[str]) -> "Feeds":
        return Feeds([self.output(n) for n in names])

    def run(self, feeds: "Feeds", arrays: Sequence[np.ndarray],
            fetch_names: tuple[str, ...]) -> list[np.ndarray]:
        """Feeds ``arrays`` (in ``feeds`` order), returns the fetched tensors."""
        lib = self._lib
        fetches = self._fetch_cache.get(fetch_names)
        if fetches is None:
            fetches = (TF_Output * len(fetch_names))(*(self.output(n) for n in fetch_names))
            self._fetch_cache[fetch_names] = fetches
        count = len(feeds.outputs)
        inputs = (_P * count)()
        strings: list[tuple[int, int]] = []
        outputs = (_P * len(fetch_names))()
        try:
            for i, array in enumerate(arrays):
                inputs[i] = _new_tensor(lib, array, strings)
            lib.TF_SessionRun(self._session, None, feeds.outputs, inputs, count, fetches,
                              outputs, len(fetch_names), None, 0, None, self._status.handle)
            self._status.check("tensorflow")
            return [_to_numpy(lib, outputs[i], name) for i, name in enumerate(fetch_names)]
        finally:
            for data, n in strings:
                for j in range(n):
                    lib.TF_StringDealloc(data + j * _TSTRING_SIZE)
            for tensor in (*inputs, *outputs):
                if tensor:
                    lib.TF_DeleteTensor(tensor)

    def close(self) -> None:
        if self._session:
            status = Status(self._lib)
            self._lib.TF_CloseSession(self._session, status.handle)
            self._lib.TF_DeleteSession(self._session, status.handle)
            status.close()
            self._session = None
        if self._graph:
            self._lib.TF_DeleteGraph(self._graph)
            self._graph = None
        self._status.close()


class Feeds:
    """The TF_Outputs that a run feeds, in order."""

    def __init__(self, outputs: list[TF_Output]) -> None:
        self.outputs = (TF_Output * len(outputs))(*outputs)


def _new_session(lib: ctypes.CDLL, graph: int, config: bytes, status: Status) -> int:
    options = lib.TF_NewSessionOptions()
    try:
        lib.TF_SetConfig(options, config, len(config), status.handle)
        status.check("tensorflow rejected the session options")
        session = lib.TF_NewSession(graph, options, status.handle)
        status.check("tensorflow could not create a session")
        return session
    finally:
        lib.TF_DeleteSessionOptions(options)


def _new_tensor(lib: ctypes.CDLL, array: np.ndarray, strings: list) -> int:
    """A TF_Tensor holding a copy of ``array``. String tensors are recorded
    in ``strings`` so that their elements are freed after the run."""
    dims = (ctypes.c_int64 * array.ndim)(*array.shape)
    if array.dtype == np.object_ or array.dtype.kind in "SU":
        count = array.size
        tensor = lib.TF_AllocateTensor(TF_STRING, dims, array.ndim, count * _TSTRING_SIZE)
        data = lib.TF_TensorData(tensor)
        strings.append((data, 0))
        for j, element in enumerate(array.reshape(-1)):
            raw = element if isinstance(element, bytes) else str(element).encode()
            lib.TF_StringInit(data + j * _TSTRING_SIZE)
            strings[-1] = (data, j + 1)
            lib.TF_StringCopy(data + j * _TSTRING_SIZE, raw, len(raw))
        return tensor
    tf_type = NUMPY_TO_TF.get(array.dtype)
    if tf_type is None:
        raise ServerError(Code.INVALID_ARG, f"tensorflow has no type for {array.dtype}")
    array = np.ascontiguousarray(array)
    tensor = lib.TF_AllocateTensor(tf_type, dims, array.ndim, array.nbytes)
    if array.nbytes:
        ctypes.memmove(lib.TF_TensorData(tensor), array.ctypes.data, array.nbytes)
    return tensor


def _to_numpy(lib: ctypes.CDLL, tensor: int, name: str) -> np.ndarray:
    shape = tuple(lib.TF_Dim(tensor, i) for i in range(lib.TF_NumDims(tensor)))
    tf_type = lib.TF_TensorType(tensor)
    data = lib.TF_TensorData(tensor)
    if tf_type == TF_STRING:
        count = int(np.prod(shape, dtype=np.int64))
        out = np.empty(count, dtype=np.object_)
        for j in range(count):
            element = data + j * _TSTRING_SIZE
            out[j] = ctypes.string_at(lib.TF_StringGetDataPointer(element),
                                      lib.TF_StringGetSize(element))
        return out.reshape(shape)
    dtype = TF_TO_NUMPY.get(tf_type)
    if dtype is None:
        raise ServerError(Code.INTERNAL, f"output '{name}' has TensorFlow type {tf_type}, "
                          "which has no v1 data type")
    out = np.empty(shape, dtype)
    if out.nbytes:
        if lib.TF_TensorByteSize(tensor) != out.nbytes:
            raise ServerError(Code.INTERNAL, f"output '{name}' holds "
                              f"{lib.TF_TensorByteSize(tensor)} bytes for shape {list(shape)}")
        ctypes.memmove(out.ctypes.data, data, out.nbytes)
    return out

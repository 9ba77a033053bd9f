# TensorFlow GraphDef and SavedModel models on the native TensorFlow runtime
# (csrc/tensorflow_runtime.h). Included from _core.pyx.

from libcpp.string cimport string
from libcpp.vector cimport vector


cdef extern from "tensorflow_runtime.h" namespace "pyserver" nogil:
    cdef cppclass CTensorFlowSessionOptions "pyserver::TensorFlowSessionOptions":
        string library_path
        string config_proto
        string device

    cdef cppclass CTensorFlowSession "pyserver::TensorFlowSession":
        @staticmethod
        CStatus FromGraphDef(const CTensorFlowSessionOptions& options, const string& graph_def,
                             unique_ptr[CTensorFlowSession]* session)

        @staticmethod
        CStatus FromSavedModel(const CTensorFlowSessionOptions& options,
                               const string& export_dir, const vector[string]& tags,
                               unique_ptr[CTensorFlowSession]* session, string* meta_graph)

    cdef cppclass CTensorFlowRuntime "pyserver::TensorFlowRuntime"(CModelRuntime):
        @staticmethod
        CStatus Create(CNativeRuntimeConfig config, CHostMemoryPool* pool,
                       unique_ptr[CTensorFlowSession] session,
                       const vector[string]& graph_tensors, const string& what,
                       unique_ptr[CTensorFlowRuntime]* runtime)


cdef class TensorFlowSession:
    """A TensorFlow graph and session, loaded but not yet bound to a config.

    ``meta_graph`` is the serialized MetaGraphDef of a SavedModel (b"" for a
    GraphDef). ``load_tensorflow`` takes the session over.
    """
    cdef unique_ptr[CTensorFlowSession] session
    cdef readonly bytes meta_graph


def tensorflow_session(str library_path, bytes config_proto, *, bytes graph_def=None,
                       str saved_model=None, tags=(), str device=""):
    """Loads a GraphDef (``graph_def``, serialized; ops placed on ``device``
    by default) or the SavedModel folder ``saved_model`` (its MetaGraph with
    exactly ``tags``) with TensorFlow's C library at ``library_path``, the
    session configured by the serialized ConfigProto ``config_proto``.
    Releases the GIL while TensorFlow loads. Raises ServerError."""
    cdef CTensorFlowSessionOptions options
    cdef string model
    cdef string meta_graph
    cdef vector[string] tag_list
    cdef CStatus status
    cdef TensorFlowSession out = TensorFlowSession()
    options.library_path = library_path.encode()
    options.config_proto = config_proto
    options.device = device.encode()
    if graph_def is not None:
        model = graph_def
        with nogil:
            status = CTensorFlowSession.FromGraphDef(options, model, &out.session)
        _check(status)
        out.meta_graph = b""
        return out
    if saved_model is None:
        raise ValueError("tensorflow_session needs graph_def or saved_model")
    model = saved_model.encode()
    for tag in tags:
        tag_list.push_back(tag.encode())
    with nogil:
        status = CTensorFlowSession.FromSavedModel(options, model, tag_list, &out.session,
                                                   &meta_graph)
    _check(status)
    out.meta_graph = meta_graph
    return out


def load_tensorflow(config, TensorFlowSession session, graph_tensors, str what, int device,
                    HostMemoryPool pool):
    """The native runtime of one instance: ``session`` bound to the
    ``model_config_pb2.ModelConfig`` ``config``, where ``graph_tensors``
    names the graph tensor of each config input, then each config output
    ("op" or "op:k"). ``what`` names the model in errors ("graph",
    "SavedModel"); ``device`` is -1 for CPU, else the GPU. Takes the
    session. Raises ServerError when a tensor is missing or its type
    differs from the config."""
    cdef vector[string] names
    cdef unique_ptr[CTensorFlowRuntime] runtime
    cdef CNativeRuntimeConfig native = native_config(config, device)
    cdef NativeRuntime handle = NativeRuntime()
    handle.pool = pool
    if session.session.get() == NULL:
        raise ValueError("the TensorFlow session was already used")
    for name in graph_tensors:
        names.push_back(name.encode())
    _check(CTensorFlowRuntime.Create(native, pool.pool.get(), move(session.session), names,
                                     what.encode(), &runtime))
    handle.runtime.reset(runtime.release())
    handle.description = f"TensorFlow {what} of '{config.name}'"
    return handle

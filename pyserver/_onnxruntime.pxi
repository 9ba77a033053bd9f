# ONNX Runtime through its C API (csrc/onnxruntime_runtime.h), included
# from _core.pyx: the instance thread runs the session without the GIL.

cdef extern from "onnxruntime_runtime.h" namespace "pyserver" nogil:
    cdef cppclass COrtRuntimeOptions "pyserver::OrtRuntimeOptions":
        string library_path
        string model_path
        string model_bytes
        int intra_op_threads
        int inter_op_threads
        int log_severity
        string load_error_prefix

    cdef cppclass COrtRuntime "pyserver::OrtRuntime"(CModelRuntime):
        @staticmethod
        CStatus Create(CNativeRuntimeConfig config, const COrtRuntimeOptions& options,
                       CHostMemoryPool* pool, unique_ptr[COrtRuntime]* runtime)
        const string& LibraryVersion()


def load_onnxruntime(config, str library_path, str model_path, bytes model_bytes=b"",
                     int device=-1, int intra_op_threads=1, int inter_op_threads=1,
                     int log_severity=3, str load_error_prefix="",
                     HostMemoryPool pool=None) -> NativeRuntime:
    """One ONNX Runtime session of ``config`` (a ModelConfig) on ``device``
    (-1 = CPU), its outputs allocated from ``pool``. ``library_path`` is the
    onnxruntime wheel's libonnxruntime.so.<version>; the model is read from
    ``model_path`` unless ``model_bytes`` holds it. Raises ServerError with
    the load's reason (INVALID_ARG for the model, UNAVAILABLE for the
    library)."""
    if pool is None:
        raise ValueError("a native runtime needs a HostMemoryPool")
    cdef CNativeRuntimeConfig native = native_config(config, device)
    cdef COrtRuntimeOptions options
    cdef unique_ptr[COrtRuntime] runtime
    cdef CStatus status
    options.library_path = library_path.encode()
    options.model_path = model_path.encode()
    options.model_bytes = model_bytes
    options.intra_op_threads = intra_op_threads
    options.inter_op_threads = inter_op_threads
    options.log_severity = log_severity
    options.load_error_prefix = load_error_prefix.encode()
    with nogil:
        status = COrtRuntime.Create(native, options, pool.pool.get(), &runtime)
    _check(status)
    handle = NativeRuntime()
    handle.pool = pool
    handle.description = (f"onnxruntime {runtime.get().LibraryVersion().decode()} session of "
                          f"'{config.name}'")
    handle.runtime.reset(runtime.release())
    return handle

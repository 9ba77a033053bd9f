# Python models in stub processes, driven from C++ (csrc/python_stub_runtime.h).
# Included by _core.pyx.

cdef extern from "python_stub_runtime.h" namespace "pyserver" nogil:
    cdef cppclass CPythonStubOptions "pyserver::PythonStubOptions":
        vector[string] argv
        string model_file
        string args_json
        int initialize_timeout_ms
        int finalize_timeout_ms

    cdef cppclass CPythonStubRuntime "pyserver::PythonStubRuntime"(CModelRuntime):
        @staticmethod
        CStatus Create(CNativeRuntimeConfig config, CPythonStubOptions options,
                       CHostMemoryPool* pool, unique_ptr[CPythonStubRuntime]* runtime)


def load_python_stub(config, list argv, str model_file, str args_json, int device,
                     HostMemoryPool pool, double initialize_timeout_s,
                     double finalize_timeout_s):
    """Starts one Python model instance's stub process and initialises the
    model (blocks, without the GIL). Raises ServerError when it does not
    initialise."""
    cdef CNativeRuntimeConfig native = native_config(config, device)
    cdef CPythonStubOptions options
    cdef unique_ptr[CPythonStubRuntime] created
    cdef CStatus status
    cdef NativeRuntime handle = NativeRuntime()
    handle.pool = pool
    for arg in argv:
        options.argv.push_back(arg.encode())
    options.model_file = model_file.encode()
    options.args_json = args_json.encode()
    options.initialize_timeout_ms = <int>(initialize_timeout_s * 1000)
    options.finalize_timeout_ms = <int>(finalize_timeout_s * 1000)
    with nogil:
        status = CPythonStubRuntime.Create(native, options, pool.pool.get(), &created)
    _check(status)
    handle.runtime.reset(created.release())
    handle.description = f"python model '{config.name}'"
    return handle

# CUDA shared memory: device memory of a client process, opened from its
# cudaIpcMemHandle_t (csrc/cuda_ipc_region.h).


cdef class CudaIpcRegion:
    """One client's device allocation mapped into this process. Copies in
    and out are bounds-checked in the core and release the GIL."""

    @staticmethod
    def open(bytes raw_handle, int64_t device_id, uint64_t byte_size):
        """Raises ServerError (UNAVAILABLE without a GPU or CUDA IPC;
        INVALID_ARG for a bad handle, device or size)."""
        cdef CudaIpcRegion out = CudaIpcRegion.__new__(CudaIpcRegion)
        cdef string handle = raw_handle
        cdef CStatus status
        with nogil:
            status = CCudaIpcRegion.Create(handle, device_id, byte_size, &out.region)
        _check(status)
        return out

    @property
    def device_id(self):
        return self.region.get().device_id()

    @property
    def byte_size(self):
        return self.region.get().byte_size()

    def read_into(self, uint64_t offset, object destination):
        """Copies len(destination) bytes from ``offset`` into the writable
        buffer ``destination``."""
        cdef Py_buffer view
        cdef CStatus status
        PyObject_GetBuffer(destination, &view, PyBUF_SIMPLE | PyBUF_WRITABLE)
        try:
            with nogil:
                status = self.region.get().CopyToHost(offset, view.buf, <uint64_t>view.len)
        finally:
            PyBuffer_Release(&view)
        _check(status)

    def write_from(self, uint64_t offset, object source):
        """Copies the bytes of buffer ``source`` to ``offset``."""
        cdef Py_buffer view
        cdef CStatus status
        PyObject_GetBuffer(source, &view, PyBUF_SIMPLE)
        try:
            with nogil:
                status = self.region.get().CopyFromHost(offset, view.buf, <uint64_t>view.len)
        finally:
            PyBuffer_Release(&view)
        _check(status)

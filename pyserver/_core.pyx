# cython: language_level=3, boundscheck=False, wraparound=False
"""The one boundary between Python and the C++ core (csrc/).

Requests enter through ``ModelScheduler.enqueue`` and leave through
``CompletionQueue.drain``; Python runtimes are called back from the core's
instance threads through ``_execute_in_python``. C++ statuses become Python
exceptions in ``_check`` alone.
"""

from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF
from libc.stdint cimport uint32_t, uint64_t
from libcpp.memory cimport unique_ptr
from libcpp.utility cimport move
from libcpp.vector cimport vector

from pyserver.errors import Code, ServerError


cdef int _check(const CStatus& status) except -1:
    if not status.IsOk():
        raise ServerError(status.CodeValue(), status.Message().decode("utf-8", "replace"))
    return 0


def latency_buckets_us():
    """Upper bounds of the latency histogram buckets, in microseconds
    (a last +Inf bucket is implied)."""
    return [kLatencyBucketsUs[i] for i in range(kLatencyBucketCount)]


cdef dict _histogram(const CLatencyHistogram& h):
    return {"counts": [h.counts[i] for i in range(kLatencyBucketCount + 1)],
            "sum_ns": h.sum_ns}


def monotonic_ns():
    """The core's clock (CLOCK_MONOTONIC), in nanoseconds."""
    return CMonotonicNs()


cdef class CompletionQueue:
    """Finished requests, signalled through a file descriptor.

    ``fileno()`` becomes readable when ``drain()`` has something to return.
    Drain from one thread (the event loop's).
    """

    def __cinit__(self):
        _check(CCompletionQueue.Create(&self.queue))

    def fileno(self):
        return self.queue.get().Fd()

    def drain(self):
        """Returns a list of ``(ticket, code, message, result, timings)``.

        ``result`` is what the runtime returned for the request (None on
        failure); ``timings`` is ``(received, enqueued, compute_start,
        compute_end)`` in core clock nanoseconds.
        """
        cdef CInferRequest* request
        cdef object result
        self.queue.get().Drain(&self.drained)
        out = []
        for i in range(self.drained.size()):
            request = self.drained[i].get()
            if request.payload != NULL:
                Py_DECREF(<object>request.payload)
                request.payload = NULL
            if request.result != NULL:
                result = <object>request.result
                Py_DECREF(result)
                request.result = NULL
            else:
                result = None
            if request.status.IsOk():
                out.append((request.ticket, 1, "", result,
                            (request.received_ns, request.enqueued_ns,
                             request.compute_start_ns, request.compute_end_ns)))
            else:
                out.append((request.ticket, request.status.CodeValue(),
                            request.status.Message().decode("utf-8", "replace"), None,
                            (request.received_ns, request.enqueued_ns,
                             request.compute_start_ns, request.compute_end_ns)))
        self.drained.clear()
        return out


cdef class ModelStats:
    """Statistics of one model version, kept by the core."""

    def record_rejected(self, uint32_t batch_size, uint64_t duration_ns):
        self.stats.RecordRejected(batch_size, duration_ns)

    def snapshot(self):
        """Returns a dict: inference_count, execution_count,
        last_inference_ns, by_batch_size {size: {field: value}} and the
        request/queue/compute latency histograms {counts, sum_ns}."""
        cdef CModelStatsSnapshot snap = self.stats.Snapshot()
        by_size = {}
        for item in snap.by_batch_size:
            s = item.second
            by_size[item.first] = {
                "success_count": s.success_count, "success_ns": s.success_ns,
                "compute_count": s.compute_count, "compute_ns": s.compute_ns,
                "queue_count": s.queue_count, "queue_ns": s.queue_ns,
                "failed_count": s.failed_count, "failed_ns": s.failed_ns,
            }
        return {
            "inference_count": snap.inference_count,
            "execution_count": snap.execution_count,
            "last_inference_ns": snap.last_inference_ns,
            "by_batch_size": by_size,
            "request_latency": _histogram(snap.request_latency),
            "queue_latency": _histogram(snap.queue_latency),
            "compute_latency": _histogram(snap.compute_latency),
        }


cdef void _fail_all(CInferRequest** requests, size_t count, int code, str message) noexcept:
    cdef bytes encoded = message.encode("utf-8", "replace")
    for i in range(count):
        requests[i].status = CStatus.FromCode(code, encoded)


cdef void _dispatch(object runtime, CInferRequest** requests, size_t count) noexcept:
    cdef object result
    try:
        payloads = [<object>requests[i].payload for i in range(count)]
        results = runtime.execute(payloads)
        if len(results) != count:
            raise ServerError(Code.INTERNAL,
                              f"runtime returned {len(results)} results for {count} requests")
    except ServerError as exc:
        _fail_all(requests, count, int(exc.code), exc.message)
        return
    except BaseException as exc:
        _fail_all(requests, count, int(Code.INTERNAL), f"{type(exc).__name__}: {exc}")
        return
    for i in range(count):
        result = results[i]
        if isinstance(result, ServerError):
            requests[i].status = CStatus.FromCode(
                int(result.code), result.message.encode("utf-8", "replace"))
        elif isinstance(result, BaseException):
            requests[i].status = CStatus.FromCode(
                int(Code.INTERNAL), f"{type(result).__name__}: {result}".encode("utf-8", "replace"))
        else:
            Py_INCREF(result)
            requests[i].result = <void*>result


cdef void _execute_in_python(void* context, CInferRequest** requests, size_t count) noexcept nogil:
    with gil:
        _dispatch(<object>context, requests, count)


cdef class ModelScheduler:
    """Schedules requests of one model version onto its instances.

    ``runtimes`` are Python objects with ``execute(payloads) -> results``
    (one result, or a ServerError, per payload); each gets its own instance
    thread in the core, which takes the GIL only to call it.
    """

    def __cinit__(self, list runtimes, CompletionQueue completions, ModelStats stats):
        cdef vector[unique_ptr[CModelRuntime]] native
        cdef unique_ptr[CDirectScheduler] created
        self.runtimes = list(runtimes)
        self.completions = completions
        self.stats = stats
        for runtime in self.runtimes:
            native.push_back(unique_ptr[CModelRuntime](
                new CCallbackRuntime(_execute_in_python, <void*>runtime)))
        _check(CDirectScheduler.Create(move(native), completions.queue.get(),
                                       &stats.stats, &created))
        self.scheduler.reset(created.release())

    def enqueue(self, uint64_t ticket, uint32_t batch_size, uint64_t received_ns, object payload):
        """Queues one request. Its completion carries ``ticket``. Raises
        ServerError when the scheduler refuses it (e.g. while stopping)."""
        cdef unique_ptr[CInferRequest] request = unique_ptr[CInferRequest](new CInferRequest())
        cdef CStatus status
        request.get().ticket = ticket
        request.get().batch_size = batch_size
        request.get().received_ns = received_ns
        Py_INCREF(payload)
        request.get().payload = <void*>payload
        # The scheduler's critical section never waits on the GIL, so it is
        # cheaper to keep it than to release it here.
        status = self.scheduler.get().Enqueue(&request)
        if not status.IsOk():
            Py_DECREF(payload)
            _check(status)

    @property
    def inflight(self):
        return self.scheduler.get().InflightCount()

    def stop(self):
        """Lets accepted requests finish, then joins the instance threads."""
        if self.scheduler.get() != NULL:
            with nogil:
                self.scheduler.get().Stop()

    def __dealloc__(self):
        if self.scheduler.get() != NULL:
            with nogil:
                self.scheduler.get().Stop()
            self.scheduler.reset()

# cython: language_level=3, boundscheck=False, wraparound=False
"""The one boundary between Python and the C++ core (csrc/).

Requests enter through ``ModelScheduler.enqueue`` and leave through
``CompletionQueue.drain``; Python runtimes are called back from the core's
instance threads through ``_execute_in_python``. C++ statuses become Python
exceptions in ``_check`` alone.
"""

from cpython.buffer cimport (PyBUF_FORMAT, PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release,
                             PyObject_GetBuffer)
from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libcpp.memory cimport shared_ptr, unique_ptr
from libcpp cimport bool as cpp_bool
from libcpp.utility cimport move
from libcpp.vector cimport vector

cimport cython

import os

import numpy as np

from pyserver.errors import Code, ServerError
from pyserver.tensors import NUMPY_DTYPES, deserialize_strings, serialize_strings

# The model setting (config `parameters`) that decides what happens when a
# batch of several requests fails as a whole: "true" (the default) runs each
# request alone so only the bad ones fail; "false" fails the whole batch, for
# models with side effects that must not run an innocent request twice.
RETRY_FAILED_BATCH_PARAMETER = "retry_failed_batch_per_request"


cdef int _check(const CStatus& status) except -1:
    if not status.IsOk():
        raise ServerError(status.CodeValue(), status.Message().decode("utf-8", "replace"))
    return 0


# KeyHash's seed: drawn per process, so that which keys share a hash cannot
# be known in advance from outside.
cdef uint64_t _KEY_SEED = int.from_bytes(os.urandom(8), "little")
# Keys from this size on are hashed with the GIL released.
cdef size_t _NOGIL_HASH_BYTES = 64 * 1024


cdef class CacheKey:
    """A byte string as a dict key (the response cache's): hashed once by
    the core's KeyHash, at about memory speed, and equal only to a key with
    the same bytes, so that a hash collision never makes two requests one."""

    def __cinit__(self, bytes data not None):
        cdef const char* start = data
        cdef size_t size = len(data)
        cdef uint64_t value
        self.data = data
        if size >= _NOGIL_HASH_BYTES:
            with nogil:
                value = CKeyHash(start, size, _KEY_SEED)
        else:
            value = CKeyHash(start, size, _KEY_SEED)
        self.hash_value = <Py_hash_t>(value >> 2)  # never -1, Python's error value

    def __hash__(self):
        return self.hash_value

    def __eq__(self, other):
        cdef CacheKey key
        if type(other) is not CacheKey:
            return NotImplemented
        key = <CacheKey>other
        return self.hash_value == key.hash_value and self.data == key.data

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        return f"<CacheKey of {len(self.data)} bytes>"


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
        cdef object context
        self.queue.get().Drain(&self.drained)
        out = []
        for i in range(self.drained.size()):
            request = self.drained[i].get()
            context = None
            if request.payload != NULL:
                context = <object>request.payload
                Py_DECREF(context)
                request.payload = NULL
            if request.result != NULL:
                result = <object>request.result
                Py_DECREF(result)
                request.result = NULL
            elif request.outputs.size() != 0:
                result = _native_result(request, context)
            else:
                result = None
            context = None
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


@cython.no_gc_clear
cdef class _NativeContext:
    """What a request to a native runtime keeps alive until it completes: the
    payload whose arrays the core reads, bytes made for it (serialized string
    inputs), and the model's output names to label the outputs with."""
    cdef object payload
    cdef tuple output_names
    cdef list keepalive
    cdef HostMemoryPool pool


cdef dict _native_result(CInferRequest* request, object context):
    """The outputs of a native runtime as numpy arrays over their pooled
    storage (no copies; string outputs are parsed into object arrays)."""
    cdef _NativeContext native = <_NativeContext>context
    cdef SharedBufferOwner owner
    cdef size_t k
    cdef COutputTensor* tensor
    result = {}
    for k in range(request.outputs.size()):
        tensor = &request.outputs[k]
        name = native.output_names[tensor.index]
        shape = tuple(tensor.shape)
        owner = SharedBufferOwner()
        owner.pool = native.pool
        owner.storage = tensor.storage
        owner.data = tensor.Data()
        owner.shape[0] = <Py_ssize_t>tensor.byte_size
        if tensor.type == CDataType.kString:
            count = 1
            for dim in shape:
                count *= dim
            result[name] = deserialize_strings(memoryview(owner), count, name).reshape(shape)
        else:
            result[name] = np.frombuffer(owner, dtype=NUMPY_DTYPES[<int>tensor.type]).reshape(shape)
    request.outputs.clear()
    return result


cdef void _byte_view(Py_buffer* view, int flags, void* data, Py_ssize_t* shape,
                     Py_ssize_t* strides, bint readonly):
    """Fills ``view`` (all but its owner) with ``shape[0]`` bytes at ``data``."""
    strides[0] = 1
    view.buf = data
    view.len = shape[0]
    view.readonly = readonly
    view.itemsize = 1
    view.format = NULL
    if flags & PyBUF_FORMAT:
        view.format = "B"
    view.ndim = 1
    view.shape = shape
    view.strides = strides
    view.suboffsets = NULL
    view.internal = NULL


@cython.no_gc_clear
cdef class SharedBufferOwner:
    """Read-only bytes of a native runtime's output, shared with the other
    requests of its batch; the storage lives while any view of it does."""

    def __getbuffer__(self, Py_buffer* view, int flags):
        view.obj = self
        _byte_view(view, flags, <void*>self.data, self.shape, self.strides, True)

    def __releasebuffer__(self, Py_buffer* view):
        pass


cdef CNativeRuntimeConfig native_config(object config, int device) except *:
    """The core's view of a ``model_config_pb2.ModelConfig`` for a native
    runtime of one instance (device -1 = CPU)."""
    cdef CNativeRuntimeConfig out
    cdef CTensorSpec spec
    out.model_name = config.name.encode()
    out.max_batch_size = config.max_batch_size
    out.device = device
    out.retry_failed_batch_per_request = retry_failed_batch(config)
    for tensors, target in ((config.input, 0), (config.output, 1)):
        for tensor in tensors:
            spec.name = tensor.name.encode()
            spec.type = <CDataType><int>tensor.data_type
            spec.dims.clear()
            for dim in (tensor.reshape.shape if tensor.HasField("reshape") else tensor.dims):
                spec.dims.push_back(dim)
            if target == 0:
                out.inputs.push_back(spec)
            else:
                out.outputs.push_back(spec)
    if config.HasField("sequence_batching"):
        # A stateful model: a batch must never run twice, and the sequence
        # batcher's tensors follow the config's (see SequenceBatcherConfig):
        # control inputs ([1] per batch row), then state inputs; state
        # outputs follow the outputs.
        out.retry_failed_batch_per_request = False
        for control_input in config.sequence_batching.control_input:
            control = control_input.control[0]
            spec.name = control_input.name.encode()
            spec.dims.clear()
            spec.dims.push_back(1)
            if control.kind == control.CONTROL_SEQUENCE_CORRID:
                spec.type = <CDataType><int>control.data_type
            elif len(control.int32_false_true):
                spec.type = <CDataType><int>8   # TYPE_INT32
            elif len(control.fp32_false_true):
                spec.type = <CDataType><int>11  # TYPE_FP32
            else:
                spec.type = <CDataType><int>1   # TYPE_BOOL
            out.inputs.push_back(spec)
        for target in (0, 1):
            for state in config.sequence_batching.state:
                spec.name = (state.input_name if target == 0 else state.output_name).encode()
                spec.type = <CDataType><int>state.data_type
                spec.dims.clear()
                for dim in state.dims:
                    spec.dims.push_back(dim)
                if target == 0:
                    out.inputs.push_back(spec)
                else:
                    out.outputs.push_back(spec)
    return out


def retry_failed_batch(config) -> bool:
    """The model's failed-batch setting (RETRY_FAILED_BATCH_PARAMETER)."""
    if RETRY_FAILED_BATCH_PARAMETER not in config.parameters:
        return True
    value = config.parameters[RETRY_FAILED_BATCH_PARAMETER].string_value.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise ServerError(Code.INVALID_ARG, f"parameter '{RETRY_FAILED_BATCH_PARAMETER}' must be "
                                        f"true or false, got '{value}'")


@cython.no_gc_clear
cdef class NativeRuntime:
    """A model instance that runs in C++ (made by a native backend's
    loader). A ModelScheduler takes its C++ runtime over; ``close`` then
    does nothing, and the runtime goes with the scheduler."""

    def close(self):
        self.runtime.reset()

    def __repr__(self):
        return f"<NativeRuntime {self.description}>"


cdef class ModelStats:
    """Statistics of one model version, kept by the core."""

    def record_rejected(self, uint32_t batch_size, uint64_t duration_ns):
        self.stats.RecordRejected(batch_size, duration_ns)

    def record_cache_hit(self, uint32_t batch_size, uint64_t received_ns, uint64_t end_ns,
                         uint64_t lookup_ns):
        """A request answered from the response cache (received_ns <= end_ns)."""
        if end_ns < received_ns:
            raise ValueError("end_ns is before received_ns")
        self.stats.RecordCacheHit(batch_size, received_ns, end_ns, lookup_ns)

    def record_cache_miss(self, uint64_t duration_ns):
        """A successful request that missed the response cache."""
        self.stats.RecordCacheMiss(duration_ns)

    def snapshot(self):
        """Returns a dict: inference_count, execution_count,
        cancelled_count (requests cancelled while queued, also counted as
        failed), last_inference_ns, cache_hit_count/_ns, cache_miss_count/_ns,
        by_batch_size {size: {field: value}} and the request/queue/compute
        latency histograms {counts, sum_ns}."""
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
            "cancelled_count": snap.cancelled_count,
            "last_inference_ns": snap.last_inference_ns,
            "cache_hit_count": snap.cache_hit_count, "cache_hit_ns": snap.cache_hit_ns,
            "cache_miss_count": snap.cache_miss_count, "cache_miss_ns": snap.cache_miss_ns,
            "by_batch_size": by_size,
            "request_latency": _histogram(snap.request_latency),
            "queue_latency": _histogram(snap.queue_latency),
            "compute_latency": _histogram(snap.compute_latency),
        }


cdef class HostMemoryPool:
    """Reusable host buffers for batch gathering (pinned where CUDA is)."""

    def __cinit__(self, size_t max_cached_bytes, bint try_pinned=True):
        _check(CHostMemoryPool.Create(max_cached_bytes, try_pinned, &self.pool))

    def stats(self):
        cdef CHostMemoryPoolStats s = self.pool.get().Stats()
        return {"allocations": s.allocations, "reuses": s.reuses,
                "bytes_in_use": s.bytes_in_use, "bytes_cached": s.bytes_cached,
                "pinned": s.pinned}


@cython.no_gc_clear
cdef class PooledArrayOwner:
    """Owns a pooled buffer and exposes it as bytes through the buffer
    protocol; numpy views keep it alive, and the memory returns to the pool
    when the last view is gone."""

    def __getbuffer__(self, Py_buffer* view, int flags):
        self.shape[0] = <Py_ssize_t>self.buffer.Size()
        view.obj = self
        _byte_view(view, flags, self.buffer.Data(), self.shape, self.strides, False)

    def __releasebuffer__(self, Py_buffer* view):
        pass


cdef class _BatchPayload:
    """The payload a runtime sees for a batch of several requests."""
    cdef public dict inputs
    cdef public list outputs


cdef void _fail_all(CBatch* batch, int code, str message) noexcept:
    cdef bytes encoded = message.encode("utf-8", "replace")
    for i in range(batch.requests.size()):
        batch.requests[i].status = CStatus.FromCode(code, encoded)


cdef object _merge(CBatch* batch, tuple input_names, HostMemoryPool pool):
    """One payload holding every request's inputs back to back: gathered
    inputs as views over pooled memory, the rest concatenated here."""
    cdef size_t count = batch.requests.size()
    cdef PooledArrayOwner owner
    payloads = [<object>batch.requests[i].payload for i in range(count)]
    first = payloads[0]
    merged = _BatchPayload()
    merged.inputs = {}
    for i, name in enumerate(input_names):
        sample = first.inputs[name]
        if i < <Py_ssize_t>batch.gathered.size() and batch.gathered[i].Data() != NULL:
            owner = PooledArrayOwner()
            owner.pool = pool
            owner.buffer = move(batch.gathered[i])
            merged.inputs[name] = np.frombuffer(owner, dtype=sample.dtype).reshape(
                (batch.total_batch_size,) + sample.shape[1:])
        else:
            merged.inputs[name] = np.concatenate([p.inputs[name] for p in payloads])
    outputs = list(first.outputs)
    for p in payloads[1:]:
        for name in p.outputs:
            if name not in outputs:
                outputs.append(name)
    merged.outputs = outputs
    return merged, payloads


cdef list _scatter(dict result, list payloads):
    """Splits whole-batch outputs into per-request views (no copies)."""
    out = []
    offset = 0
    for p in payloads:
        size = next(iter(p.inputs.values())).shape[0] if p.inputs else 1
        out.append({name: result[name][offset:offset + size] for name in p.outputs})
        offset += size
    return out


cdef void _set_results(CBatch* batch, list results) noexcept:
    cdef object result
    for i in range(batch.requests.size()):
        result = results[i]
        if isinstance(result, ServerError):
            batch.requests[i].status = CStatus.FromCode(
                int(result.code), result.message.encode("utf-8", "replace"))
        elif isinstance(result, BaseException):
            batch.requests[i].status = CStatus.FromCode(
                int(Code.INTERNAL), f"{type(result).__name__}: {result}".encode("utf-8", "replace"))
        else:
            Py_INCREF(result)
            batch.requests[i].result = <void*>result


cdef list _run_alone(object runtime, list payloads):
    """Runs each request on its own, so one bad request fails alone."""
    results = []
    for payload in payloads:
        try:
            (result,) = runtime.execute([payload])
        except BaseException as exc:
            result = exc
        results.append(result)
    return results


cdef void _dispatch(object context, CBatch* batch) noexcept:
    cdef size_t count = batch.requests.size()
    runtime, input_names, retry, pool = context
    try:
        if count == 1:
            results = runtime.execute([<object>batch.requests[0].payload])
        else:
            merged, payloads = _merge(batch, input_names, pool)
            try:
                (whole,) = runtime.execute([merged])
                if isinstance(whole, BaseException):
                    raise whole
                results = _scatter(whole, payloads)
            except BaseException:
                if not retry:
                    raise
                # The batch failed as a whole: find out which requests did.
                results = _run_alone(runtime, payloads)
        if len(results) != <Py_ssize_t>count:
            raise ServerError(Code.INTERNAL,
                              f"runtime returned {len(results)} results for {count} requests")
    except ServerError as exc:
        _fail_all(batch, int(exc.code), exc.message)
        return
    except BaseException as exc:
        _fail_all(batch, int(Code.INTERNAL), f"{type(exc).__name__}: {exc}")
        return
    _set_results(batch, results)


cdef void _execute_in_python(void* context, CBatch* batch) noexcept nogil:
    with gil:
        _dispatch(<object>context, batch)


_CONTROL_KINDS = {"start": CControlKind.kStart, "end": CControlKind.kEnd,
                  "ready": CControlKind.kReady, "corrid": CControlKind.kCorrId}


cdef CSequenceBatcherConfig _sequence_config(dict sequence) except *:
    """The core's settings from repository.manager's ``_sequence`` dict."""
    cdef CSequenceBatcherConfig config
    cdef CSequenceControl control
    cdef CSequenceState state
    cdef uint32_t position = sequence["input_count"]
    config.model_name = sequence["model_name"].encode()
    config.max_batch_size = sequence["max_batch_size"]
    config.strategy = CSequenceStrategy.kOldest if sequence["strategy"] == "oldest" \
        else CSequenceStrategy.kDirect
    config.max_sequence_idle_us = sequence["max_sequence_idle_microseconds"]
    config.max_candidate_sequences = sequence["max_candidate_sequences"]
    for size in sequence["preferred_batch_sizes"]:
        config.preferred_batch_sizes.push_back(size)
    config.max_queue_delay_us = sequence["max_queue_delay_microseconds"]
    config.input_count = sequence["input_count"]
    for item in sequence["controls"]:
        control.kind = _CONTROL_KINDS[item["kind"]]
        control.input_index = position
        control.type = <CDataType><int>item["data_type"]
        control.false_value = item["false"]
        control.true_value = item["true"]
        config.controls.push_back(control)
        position += 1
    for i, item in enumerate(sequence["states"]):
        state.input_index = position
        state.output_index = sequence["output_count"] + i
        state.output_name = item["output_name"].encode()
        state.type = <CDataType><int>item["data_type"]
        state.dims.clear()
        for dim in item["dims"]:
            state.dims.push_back(dim)
        state.initial.clear()
        for byte in item["initial"]:
            state.initial.push_back(<char>byte)
        config.states.push_back(state)
        position += 1
    return config


cdef int _describe_sequence(CInferRequest* r, object payload) except -1:
    """The request's correlation id and START / END flags."""
    sequence_id = payload.sequence_id
    if isinstance(sequence_id, str):
        r.correlation_id_is_string = True
        r.correlation_string = sequence_id.encode("utf-8")
    else:
        r.correlation_id = sequence_id
    r.sequence_flags = (kSequenceStart if payload.sequence_start else 0) | \
        (kSequenceEnd if payload.sequence_end else 0)
    return 0


cdef CQueuePolicy _queue_policy(dict policy):
    cdef CQueuePolicy out
    out.timeout_action = kDelay if policy.get("timeout_action") == "DELAY" else kReject
    out.default_timeout_us = policy.get("default_timeout_microseconds", 0)
    out.allow_timeout_override = policy.get("allow_timeout_override", False)
    out.max_queue_size = policy.get("max_queue_size", 0)
    return out


@cython.no_gc_clear
cdef class ModelScheduler:
    """Schedules requests of one model version onto its instances.

    ``runtimes`` are either all NativeRuntime handles (C++ runtimes: the
    scheduler takes them over, and instance threads never take the GIL) or
    all Python objects with ``execute(payloads) -> results`` (one result, or
    a ServerError, per payload), each run on its own instance thread in the
    core, which takes the GIL only to call it. Payloads have ``inputs``
    (name -> array, whole request) and ``outputs`` (names); completions
    carry a dict output name -> array either way.

    Without ``batching`` requests run one at a time (direct scheduling).
    With it (a dict: max_batch_size, preferred_batch_sizes,
    max_queue_delay_microseconds, preserve_ordering, priority_levels,
    default_priority_level, default_queue_policy, priority_queue_policy), a
    dynamic batcher forms batches; inputs are gathered into ``pool`` memory
    in ``input_names`` order. ``retry_failed_batch``: when a batch of several
    requests fails as a whole, run each alone (see RETRY_FAILED_BATCH_PARAMETER).
    """

    def __cinit__(self, list runtimes, CompletionQueue completions, ModelStats stats,
                  dict batching=None, HostMemoryPool pool=None, tuple input_names=(),
                  tuple output_names=(), bint retry_failed_batch=True, dict sequence=None,
                  double inline_limit_us=0):
        cdef vector[unique_ptr[CModelRuntime]] native
        cdef unique_ptr[CDirectScheduler] direct
        cdef unique_ptr[CDynamicBatcher] dynamic
        cdef unique_ptr[CSequenceBatcher] stateful
        cdef CDynamicBatcherConfig config
        cdef NativeRuntime handle
        self.completions = completions
        self.stats = stats
        self.pool = pool
        self.input_names = input_names
        self.output_names = output_names
        self.output_indices = {name: i for i, name in enumerate(output_names)}
        self.batching = batching is not None
        self.sequence = sequence is not None
        self.retry_failed_batch = retry_failed_batch
        self.direct = NULL
        self.inline_limit_ns = <int64_t>(inline_limit_us * 1000) if inline_limit_us > 0 else 0
        self.native = len(runtimes) > 0 and isinstance(runtimes[0], NativeRuntime)
        self.contexts = []
        for runtime in runtimes:
            if isinstance(runtime, NativeRuntime) != self.native:
                raise ValueError("a model's instances are all native or all Python runtimes")
            if self.native:
                handle = <NativeRuntime>runtime
                if handle.runtime.get() == NULL:
                    raise ValueError("native runtime is closed or already scheduled")
                native.push_back(move(handle.runtime))
            else:
                context = (runtime, input_names, retry_failed_batch, pool)
                self.contexts.append(context)
                native.push_back(unique_ptr[CModelRuntime](
                    new CCallbackRuntime(_execute_in_python, <void*>context)))
        if sequence is not None:
            if not self.native:
                raise ServerError(Code.INVALID_ARG, "sequence batching needs a model that runs "
                                  "natively (onnxruntime_onnx, tensorflow or python)")
            if pool is None:
                raise ValueError("sequence batching needs a HostMemoryPool")
            _check(CSequenceBatcher.Create(_sequence_config(sequence), move(native),
                                           pool.pool.get(), completions.queue.get(),
                                           &stats.stats, &stateful))
            self.scheduler.reset(stateful.release())
            return
        if batching is None:
            _check(CDirectScheduler.Create(move(native), completions.queue.get(),
                                           &stats.stats, &direct))
            self.direct = direct.get()
            self.scheduler.reset(direct.release())
            return
        if pool is None:
            raise ValueError("dynamic batching needs a HostMemoryPool")
        config.max_batch_size = batching["max_batch_size"]
        for size in sorted(batching.get("preferred_batch_sizes", ())):
            config.preferred_batch_sizes.push_back(size)
        config.max_queue_delay_us = batching.get("max_queue_delay_microseconds", 0)
        config.preserve_ordering = batching.get("preserve_ordering", False)
        config.priority_levels = batching.get("priority_levels", 0)
        config.default_priority_level = batching.get("default_priority_level", 0)
        config.default_queue_policy = _queue_policy(batching.get("default_queue_policy", {}))
        for level, policy in batching.get("priority_queue_policy", {}).items():
            config.priority_queue_policy[level] = _queue_policy(policy)
        _check(CDynamicBatcher.Create(config, move(native), pool.pool.get(),
                                      completions.queue.get(), &stats.stats, &dynamic))
        self.scheduler.reset(dynamic.release())

    def enqueue(self, uint64_t ticket, uint32_t batch_size, uint64_t received_ns, object payload):
        """Queues one request. Its completion carries ``ticket``. Raises
        ServerError when the scheduler refuses it (queue full, stopping).
        With direct scheduling and ``inline_limit_us``, a request for a model
        whose recent executions averaged no more than that may run on this
        thread (the GIL released) when an instance is idle and nothing
        waits: it has then completed, to the completion queue, on return.
        Returns whether it ran here."""
        cdef unique_ptr[CInferRequest] request = unique_ptr[CInferRequest](new CInferRequest())
        cdef CInferRequest* r = request.get()
        cdef CStatus status
        cdef cpp_bool ran_inline = False
        cdef object held = payload
        r.ticket = ticket
        r.batch_size = batch_size
        r.received_ns = received_ns
        if self.sequence:
            _describe_sequence(r, payload)
        if self.native:
            held = self._describe_native(r, payload)
        elif self.batching:
            self._describe_inputs(r, payload)
        Py_INCREF(held)
        r.payload = <void*>held
        if self.direct != NULL and self.inline_limit_ns > 0:
            # It may run the request here and now: never with the GIL held.
            with nogil:
                status = self.direct.EnqueueOrRun(&request, self.inline_limit_ns, &ran_inline)
        else:
            # The scheduler's critical section never waits on the GIL, so it is
            # cheaper to keep it than to release it here.
            status = self.scheduler.get().Enqueue(&request)
        if not status.IsOk():
            Py_DECREF(held)
            _check(status)
        return ran_inline

    cdef int _describe_inputs(self, CInferRequest* r, object payload) except -1:
        cdef Py_buffer view
        cdef CInputRef ref
        inputs = payload.inputs
        r.shape_key = payload.shape_key
        r.priority = payload.priority
        r.timeout_us = payload.timeout_us
        r.inputs.resize(len(self.input_names))
        for i, name in enumerate(self.input_names):
            array = inputs[name]
            if array.dtype.hasobject:
                continue  # variable-size elements: the binding concatenates them
            PyObject_GetBuffer(array, &view, PyBUF_SIMPLE)
            ref.data = view.buf
            ref.byte_size = view.len
            PyBuffer_Release(&view)  # the payload keeps the array alive
            r.inputs[i] = ref
        return 0

    cdef object _describe_native(self, CInferRequest* r, object payload):
        """Points the request at its input bytes with their shapes and names
        the outputs it wants; returns what must live until it completes."""
        cdef Py_buffer view
        cdef _NativeContext context = _NativeContext()
        cdef CInputRef* ref
        context.payload = payload
        context.output_names = self.output_names
        context.keepalive = None
        context.pool = self.pool
        inputs = payload.inputs
        r.shape_key = payload.shape_key
        r.priority = payload.priority
        r.timeout_us = payload.timeout_us
        r.inputs.resize(len(self.input_names))
        for i, name in enumerate(self.input_names):
            try:
                array = inputs[name]
            except KeyError:
                raise ServerError(Code.INVALID_ARG, f"input '{name}' is missing") from None
            ref = &r.inputs[i]
            for dim in array.shape:
                ref.shape.push_back(dim)
            if array.dtype.hasobject:
                # The core's string layout: length-prefixed elements.
                array = serialize_strings(array)
                if context.keepalive is None:
                    context.keepalive = []
                context.keepalive.append(array)
            elif not array.flags.c_contiguous:
                array = np.ascontiguousarray(array)
                if context.keepalive is None:
                    context.keepalive = []
                context.keepalive.append(array)
            PyObject_GetBuffer(array, &view, PyBUF_SIMPLE)
            ref.data = view.buf
            ref.byte_size = view.len
            PyBuffer_Release(&view)  # the context keeps the bytes alive
        indices = self.output_indices
        wanted = sorted({indices[name] for name in payload.outputs if name in indices})
        for index in wanted:
            r.requested_outputs.push_back(index)
        return context

    def cancel(self, uint64_t ticket):
        """Takes the request with ``ticket`` out of the queue if it is still
        waiting there: it then completes (once) with code CANCELLED and is
        never executed. Returns False when it is not waiting (running,
        completed, unknown); it is left alone."""
        return self.scheduler.get().Cancel(ticket)

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
include "_python_stub.pxi"
include "_tensorflow.pxi"
include "_onnxruntime.pxi"
include "_cuda_ipc.pxi"

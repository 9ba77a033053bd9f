# C++ declarations of the core (csrc/). C++ types carry a C prefix.
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libcpp cimport bool
from libcpp.map cimport map
from libcpp.memory cimport shared_ptr, unique_ptr
from libcpp.string cimport string
from libcpp.vector cimport vector


cdef extern from "status.h" namespace "pyserver" nogil:
    cdef cppclass CStatus "pyserver::Status":
        CStatus()
        @staticmethod
        CStatus FromCode(int code, string message)
        bool IsOk()
        int CodeValue()
        const string& Message()


cdef extern from "clock.h" namespace "pyserver" nogil:
    uint64_t CMonotonicNs "pyserver::MonotonicNs"()


cdef extern from "key_hash.h" namespace "pyserver" nogil:
    uint64_t CKeyHash "pyserver::KeyHash"(const void* data, size_t size, uint64_t seed)


cdef class CacheKey:
    cdef readonly bytes data
    cdef Py_hash_t hash_value


cdef extern from "host_memory_pool.h" namespace "pyserver" nogil:
    cdef cppclass CPooledBuffer "pyserver::PooledBuffer":
        CPooledBuffer()
        void* Data()
        size_t Size()
        void Reset()


cdef extern from "tensor.h" namespace "pyserver" nogil:
    cdef enum class CDataType "pyserver::DataType"(int32_t):
        kInvalid "pyserver::DataType::kInvalid"
        kString "pyserver::DataType::kString"

    cdef cppclass COutputTensor "pyserver::OutputTensor":
        uint32_t index
        CDataType type
        vector[int64_t] shape
        shared_ptr[CPooledBuffer] storage
        size_t offset
        size_t byte_size
        const void* Data()


cdef extern from "infer_request.h" namespace "pyserver" nogil:
    cdef cppclass CInputRef "pyserver::InputRef":
        const void* data
        size_t byte_size
        vector[int64_t] shape

    cdef cppclass CInferRequest "pyserver::InferRequest":
        uint64_t ticket
        uint32_t batch_size
        vector[CInputRef] inputs
        uint64_t shape_key
        uint32_t priority
        uint64_t timeout_us
        uint64_t correlation_id
        string correlation_string
        bool correlation_id_is_string
        uint32_t sequence_flags
        void* payload
        void* result
        vector[uint32_t] requested_outputs
        vector[COutputTensor] outputs
        CStatus status
        uint64_t received_ns
        uint64_t enqueued_ns
        uint64_t compute_start_ns
        uint64_t compute_end_ns


cdef extern from "host_memory_pool.h" namespace "pyserver" nogil:
    cdef cppclass CHostMemoryPoolStats "pyserver::HostMemoryPoolStats":
        uint64_t allocations
        uint64_t reuses
        uint64_t bytes_in_use
        uint64_t bytes_cached
        bool pinned

    cdef cppclass CHostMemoryPool "pyserver::HostMemoryPool":
        @staticmethod
        CStatus Create(size_t max_cached_bytes, bool try_pinned,
                       unique_ptr[CHostMemoryPool]* pool)
        CStatus Allocate(size_t bytes, CPooledBuffer* buffer)
        CHostMemoryPoolStats Stats()


cdef extern from "model_runtime.h" namespace "pyserver" nogil:
    cdef cppclass CBatch "pyserver::Batch":
        vector[CInferRequest*] requests
        uint32_t total_batch_size
        vector[CPooledBuffer] gathered

    cdef cppclass CModelRuntime "pyserver::ModelRuntime":
        pass


cdef extern from "native_runtime.h" namespace "pyserver" nogil:
    cdef cppclass CTensorSpec "pyserver::TensorSpec":
        string name
        CDataType type
        vector[int64_t] dims

    cdef cppclass CNativeRuntimeConfig "pyserver::NativeRuntimeConfig":
        string model_name
        uint32_t max_batch_size
        vector[CTensorSpec] inputs
        vector[CTensorSpec] outputs
        bool retry_failed_batch_per_request
        int device

    cdef cppclass CNativeRuntime "pyserver::NativeRuntime"(CModelRuntime):
        const CNativeRuntimeConfig& config()


cdef extern from "callback_runtime.h" namespace "pyserver" nogil:
    ctypedef void (*CExecuteFn "pyserver::ExecuteFn")(void* context, CBatch* batch) noexcept

    cdef cppclass CCallbackRuntime "pyserver::CallbackRuntime"(CModelRuntime):
        CCallbackRuntime(CExecuteFn fn, void* context)


cdef extern from "completion_queue.h" namespace "pyserver" nogil:
    cdef cppclass CCompletionQueue "pyserver::CompletionQueue":
        @staticmethod
        CStatus Create(unique_ptr[CCompletionQueue]* queue)
        int Fd()
        size_t Drain(vector[unique_ptr[CInferRequest]]* out)


cdef extern from "model_stats.h" namespace "pyserver" nogil:
    cdef cppclass CBatchSizeStats "pyserver::BatchSizeStats":
        uint64_t success_count
        uint64_t success_ns
        uint64_t compute_count
        uint64_t compute_ns
        uint64_t queue_count
        uint64_t queue_ns
        uint64_t failed_count
        uint64_t failed_ns

    const int kLatencyBucketCount "pyserver::kLatencyBucketCount"
    const double kLatencyBucketsUs "pyserver::kLatencyBucketsUs"[]

    cdef cppclass CLatencyHistogram "pyserver::LatencyHistogram":
        uint64_t counts[15]  # kLatencyBucketCount + 1
        uint64_t sum_ns

    cdef cppclass CModelStatsSnapshot "pyserver::ModelStatsSnapshot":
        map[uint32_t, CBatchSizeStats] by_batch_size
        CLatencyHistogram request_latency
        CLatencyHistogram queue_latency
        CLatencyHistogram compute_latency
        uint64_t inference_count
        uint64_t execution_count
        uint64_t cancelled_count
        uint64_t last_inference_ns
        uint64_t cache_hit_count
        uint64_t cache_hit_ns
        uint64_t cache_miss_count
        uint64_t cache_miss_ns

    cdef cppclass CModelStats "pyserver::ModelStats":
        CModelStats()
        void RecordRejected(uint32_t batch_size, uint64_t duration_ns)
        void RecordCacheHit(uint32_t batch_size, uint64_t received_ns, uint64_t end_ns,
                            uint64_t lookup_ns)
        void RecordCacheMiss(uint64_t duration_ns)
        CModelStatsSnapshot Snapshot()


cdef extern from "scheduler.h" namespace "pyserver" nogil:
    cdef cppclass CScheduler "pyserver::Scheduler":
        CStatus Enqueue(unique_ptr[CInferRequest]* request)
        bool Cancel(uint64_t ticket)
        size_t InflightCount()
        void Stop()


cdef extern from "direct_scheduler.h" namespace "pyserver" nogil:
    cdef cppclass CDirectScheduler "pyserver::DirectScheduler"(CScheduler):
        @staticmethod
        CStatus Create(vector[unique_ptr[CModelRuntime]] runtimes,
                       CCompletionQueue* completions, CModelStats* stats,
                       unique_ptr[CDirectScheduler]* scheduler)
        CStatus EnqueueOrRun(unique_ptr[CInferRequest]* request, int64_t inline_limit_ns,
                             bool* ran_inline)


cdef extern from "dynamic_batcher.h" namespace "pyserver" nogil:
    cdef enum CTimeoutAction "pyserver::TimeoutAction":
        kReject "pyserver::TimeoutAction::kReject"
        kDelay "pyserver::TimeoutAction::kDelay"

    cdef cppclass CQueuePolicy "pyserver::QueuePolicy":
        CTimeoutAction timeout_action
        uint64_t default_timeout_us
        bool allow_timeout_override
        uint32_t max_queue_size

    cdef cppclass CDynamicBatcherConfig "pyserver::DynamicBatcherConfig":
        uint32_t max_batch_size
        vector[uint32_t] preferred_batch_sizes
        uint64_t max_queue_delay_us
        bool preserve_ordering
        uint32_t priority_levels
        uint32_t default_priority_level
        CQueuePolicy default_queue_policy
        map[uint32_t, CQueuePolicy] priority_queue_policy

    cdef cppclass CDynamicBatcher "pyserver::DynamicBatcher"(CScheduler):
        @staticmethod
        CStatus Create(const CDynamicBatcherConfig& config,
                       vector[unique_ptr[CModelRuntime]] runtimes, CHostMemoryPool* pool,
                       CCompletionQueue* completions, CModelStats* stats,
                       unique_ptr[CDynamicBatcher]* batcher)


cdef extern from "sequence_batcher.h" namespace "pyserver" nogil:
    cdef enum class CSequenceStrategy "pyserver::SequenceStrategy"(int):
        kDirect "pyserver::SequenceStrategy::kDirect"
        kOldest "pyserver::SequenceStrategy::kOldest"

    cdef enum class CControlKind "pyserver::ControlKind"(int):
        kStart "pyserver::ControlKind::kStart"
        kEnd "pyserver::ControlKind::kEnd"
        kReady "pyserver::ControlKind::kReady"
        kCorrId "pyserver::ControlKind::kCorrId"

    cdef cppclass CSequenceControl "pyserver::SequenceControl":
        CControlKind kind
        uint32_t input_index
        CDataType type
        double false_value
        double true_value

    cdef cppclass CSequenceState "pyserver::SequenceState":
        uint32_t input_index
        uint32_t output_index
        string output_name
        CDataType type
        vector[int64_t] dims
        vector[char] initial

    cdef cppclass CSequenceBatcherConfig "pyserver::SequenceBatcherConfig":
        string model_name
        uint32_t max_batch_size
        CSequenceStrategy strategy
        uint64_t max_sequence_idle_us
        uint32_t max_candidate_sequences
        vector[uint32_t] preferred_batch_sizes
        uint64_t max_queue_delay_us
        uint32_t input_count
        vector[CSequenceControl] controls
        vector[CSequenceState] states

    const uint32_t kSequenceStart "pyserver::kSequenceStart"
    const uint32_t kSequenceEnd "pyserver::kSequenceEnd"

    cdef cppclass CSequenceBatcher "pyserver::SequenceBatcher"(CScheduler):
        @staticmethod
        CStatus Create(const CSequenceBatcherConfig& config,
                       vector[unique_ptr[CModelRuntime]] runtimes, CHostMemoryPool* pool,
                       CCompletionQueue* completions, CModelStats* stats,
                       unique_ptr[CSequenceBatcher]* batcher)
        size_t ActiveSequenceCount()
        size_t BacklogCount()


cdef class HostMemoryPool:
    cdef unique_ptr[CHostMemoryPool] pool


# Every holder of pooled memory keeps the pool's Python object alive (and is
# no_gc_clear), so the pool is never freed while any of its buffers is out.
cdef class NativeRuntime:
    cdef unique_ptr[CModelRuntime] runtime
    cdef readonly str description
    cdef HostMemoryPool pool


cdef CNativeRuntimeConfig native_config(object config, int device) except *


cdef class SharedBufferOwner:
    cdef HostMemoryPool pool
    cdef shared_ptr[CPooledBuffer] storage
    cdef const void* data
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]


cdef class PooledArrayOwner:
    cdef HostMemoryPool pool
    cdef CPooledBuffer buffer
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]


cdef class CompletionQueue:
    cdef unique_ptr[CCompletionQueue] queue
    cdef vector[unique_ptr[CInferRequest]] drained


cdef class ModelStats:
    cdef CModelStats stats


cdef class ModelScheduler:
    cdef unique_ptr[CScheduler] scheduler
    # The direct scheduler when that is the scheduler (borrowed from
    # `scheduler`), else NULL; requests may run on the caller's thread.
    cdef CDirectScheduler* direct
    cdef int64_t inline_limit_ns
    cdef CompletionQueue completions
    cdef ModelStats stats
    cdef HostMemoryPool pool
    cdef list contexts
    cdef tuple input_names
    cdef tuple output_names
    cdef dict output_indices
    cdef bint batching
    cdef bint native
    cdef bint retry_failed_batch
    cdef bint sequence

    cdef int _describe_inputs(self, CInferRequest* r, object payload) except -1
    cdef object _describe_native(self, CInferRequest* r, object payload)


cdef extern from "cuda_ipc_region.h" namespace "pyserver" nogil:
    cdef cppclass CCudaIpcRegion "pyserver::CudaIpcRegion":
        @staticmethod
        CStatus Create(const string& raw_handle, int64_t device_id, uint64_t byte_size,
                       unique_ptr[CCudaIpcRegion]* region)
        CStatus CopyToHost(uint64_t offset, void* dst, uint64_t bytes)
        CStatus CopyFromHost(uint64_t offset, const void* src, uint64_t bytes)
        int64_t device_id()
        uint64_t byte_size()


cdef class CudaIpcRegion:
    cdef unique_ptr[CCudaIpcRegion] region

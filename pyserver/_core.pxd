# C++ declarations of the core (csrc/). C++ types carry a C prefix.
from libc.stdint cimport uint32_t, uint64_t
from libcpp cimport bool
from libcpp.map cimport map
from libcpp.memory cimport unique_ptr
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


cdef extern from "infer_request.h" namespace "pyserver" nogil:
    cdef cppclass CInferRequest "pyserver::InferRequest":
        uint64_t ticket
        uint32_t batch_size
        void* payload
        void* result
        CStatus status
        uint64_t received_ns
        uint64_t enqueued_ns
        uint64_t compute_start_ns
        uint64_t compute_end_ns


cdef extern from "model_runtime.h" namespace "pyserver" nogil:
    cdef cppclass CModelRuntime "pyserver::ModelRuntime":
        pass


cdef extern from "callback_runtime.h" namespace "pyserver" nogil:
    ctypedef void (*CExecuteFn "pyserver::ExecuteFn")(
        void* context, CInferRequest** requests, size_t count) noexcept

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
        uint64_t last_inference_ns

    cdef cppclass CModelStats "pyserver::ModelStats":
        CModelStats()
        void RecordRejected(uint32_t batch_size, uint64_t duration_ns)
        CModelStatsSnapshot Snapshot()


cdef extern from "scheduler.h" namespace "pyserver" nogil:
    cdef cppclass CScheduler "pyserver::Scheduler":
        CStatus Enqueue(unique_ptr[CInferRequest]* request)
        size_t InflightCount()
        void Stop()


cdef extern from "direct_scheduler.h" namespace "pyserver" nogil:
    cdef cppclass CDirectScheduler "pyserver::DirectScheduler"(CScheduler):
        @staticmethod
        CStatus Create(vector[unique_ptr[CModelRuntime]] runtimes,
                       CCompletionQueue* completions, CModelStats* stats,
                       unique_ptr[CDirectScheduler]* scheduler)


cdef class CompletionQueue:
    cdef unique_ptr[CCompletionQueue] queue
    cdef vector[unique_ptr[CInferRequest]] drained


cdef class ModelStats:
    cdef CModelStats stats


cdef class ModelScheduler:
    cdef unique_ptr[CScheduler] scheduler
    cdef CompletionQueue completions
    cdef ModelStats stats
    cdef list runtimes

// ModelStats: inference statistics of one model version.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

#include "infer_request.h"

namespace pyserver {

// Cumulative figures for one request batch size (v1 InferRequestStats).
struct BatchSizeStats {
  uint64_t success_count = 0;
  uint64_t success_ns = 0;  // request duration: received -> computed
  uint64_t compute_count = 0;
  uint64_t compute_ns = 0;
  uint64_t queue_count = 0;
  uint64_t queue_ns = 0;
  uint64_t failed_count = 0;
  uint64_t failed_ns = 0;
};

// Latency histogram with fixed bucket bounds (kLatencyBucketsUs, in
// microseconds, plus an implicit +Inf bucket). Counts are per bucket, not
// cumulative.
constexpr int kLatencyBucketCount = 14;
extern const double kLatencyBucketsUs[kLatencyBucketCount];

struct LatencyHistogram {
  uint64_t counts[kLatencyBucketCount + 1] = {};
  uint64_t sum_ns = 0;
  void Observe(uint64_t ns);
};

struct ModelStatsSnapshot {
  std::map<uint32_t, BatchSizeStats> by_batch_size;
  // Successful requests only.
  LatencyHistogram request_latency;
  LatencyHistogram queue_latency;
  LatencyHistogram compute_latency;
  uint64_t inference_count = 0;  // sum of batch sizes of successful requests
  uint64_t execution_count = 0;  // batches executed
  // Requests cancelled while queued (also counted as failed).
  uint64_t cancelled_count = 0;
  uint64_t last_inference_ns = 0;
  // Response cache (Triton's cache_hit / cache_miss statistics).
  uint64_t cache_hit_count = 0;
  uint64_t cache_hit_ns = 0;   // time spent looking up the responses served from the cache
  uint64_t cache_miss_count = 0;
  uint64_t cache_miss_ns = 0;  // lookup plus insertion time of the requests that missed
};

// Thread safe: one mutex per model version, held for a few additions; no
// global lock is shared between models.
class ModelStats {
 public:
  // Records a request that finished in an instance (success or failure), or
  // left the queue cancelled (status kCancelled).
  void RecordCompleted(const InferRequest& request);

  // Records a request rejected before it reached the scheduler.
  void RecordRejected(uint32_t batch_size, uint64_t duration_ns);

  // Records a request answered from the response cache without reaching the
  // scheduler: a success (request time received_ns -> end_ns, no queue
  // time, no compute, no inference or execution counted) and a cache hit
  // whose lookup took lookup_ns. Requires received_ns <= end_ns.
  void RecordCacheHit(uint32_t batch_size, uint64_t received_ns, uint64_t end_ns,
                      uint64_t lookup_ns);

  // Records a successful request that missed the response cache: lookup
  // plus insertion took duration_ns. Its success is recorded by
  // RecordCompleted as for any request.
  void RecordCacheMiss(uint64_t duration_ns);

  ModelStatsSnapshot Snapshot() const;

 private:
  mutable std::mutex mu_;
  ModelStatsSnapshot stats_;
};

}  // namespace pyserver

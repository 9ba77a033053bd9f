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

  ModelStatsSnapshot Snapshot() const;

 private:
  mutable std::mutex mu_;
  ModelStatsSnapshot stats_;
};

}  // namespace pyserver

#include "model_stats.h"

namespace pyserver {

const double kLatencyBucketsUs[kLatencyBucketCount] = {
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000};

void LatencyHistogram::Observe(uint64_t ns) {
  const double us = static_cast<double>(ns) / 1000.0;
  int bucket = 0;
  while (bucket < kLatencyBucketCount && us > kLatencyBucketsUs[bucket]) ++bucket;
  counts[bucket] += 1;
  sum_ns += ns;
}

void ModelStats::RecordCompleted(const InferRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  BatchSizeStats& s = stats_.by_batch_size[request.batch_size];
  const uint64_t total = request.compute_end_ns - request.received_ns;
  if (!request.status.IsOk()) {
    s.failed_count += 1;
    s.failed_ns += total;
    if (request.status.Code() == StatusCode::kCancelled) stats_.cancelled_count += 1;
    return;
  }
  const uint64_t queue = request.compute_start_ns - request.enqueued_ns;
  const uint64_t compute = request.compute_end_ns - request.compute_start_ns;
  s.success_count += 1;
  s.success_ns += total;
  s.queue_count += 1;
  s.queue_ns += queue;
  s.compute_count += 1;
  s.compute_ns += compute;
  stats_.request_latency.Observe(total);
  stats_.queue_latency.Observe(queue);
  stats_.compute_latency.Observe(compute);
  stats_.inference_count += request.batch_size;
  if (request.counts_execution) stats_.execution_count += 1;
  stats_.last_inference_ns = request.compute_end_ns;
}

void ModelStats::RecordRejected(uint32_t batch_size, uint64_t duration_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  BatchSizeStats& s = stats_.by_batch_size[batch_size];
  s.failed_count += 1;
  s.failed_ns += duration_ns;
}

void ModelStats::RecordCacheHit(uint32_t batch_size, uint64_t received_ns, uint64_t end_ns,
                                uint64_t lookup_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  BatchSizeStats& s = stats_.by_batch_size[batch_size];
  const uint64_t total = end_ns - received_ns;
  s.success_count += 1;
  s.success_ns += total;
  s.queue_count += 1;  // queued for no time, as Triton counts a hit
  stats_.request_latency.Observe(total);
  stats_.queue_latency.Observe(0);
  stats_.cache_hit_count += 1;
  stats_.cache_hit_ns += lookup_ns;
  stats_.last_inference_ns = end_ns;
}

void ModelStats::RecordCacheMiss(uint64_t duration_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.cache_miss_count += 1;
  stats_.cache_miss_ns += duration_ns;
}

ModelStatsSnapshot ModelStats::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace pyserver

#include "model_stats.h"

namespace pyserver {

void ModelStats::RecordCompleted(const InferRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  BatchSizeStats& s = stats_.by_batch_size[request.batch_size];
  const uint64_t total = request.compute_end_ns - request.received_ns;
  if (!request.status.IsOk()) {
    s.failed_count += 1;
    s.failed_ns += total;
    return;
  }
  s.success_count += 1;
  s.success_ns += total;
  s.queue_count += 1;
  s.queue_ns += request.compute_start_ns - request.enqueued_ns;
  s.compute_count += 1;
  s.compute_ns += request.compute_end_ns - request.compute_start_ns;
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

ModelStatsSnapshot ModelStats::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace pyserver

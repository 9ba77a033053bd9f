// Unit tests of ModelStats, fed by a DirectScheduler.

#include <chrono>
#include <memory>
#include <vector>

#include "completion_queue.h"
#include "direct_scheduler.h"
#include "model_stats.h"
#include "test_runtimes.h"
#include "unit_test.h"

namespace pyserver {
namespace {

using testing::Collect;
using testing::MakeRequest;
using testing::RecordingRuntime;

TEST(StatsCountSuccessFailureAndBatchSizes) {
  std::unique_ptr<CompletionQueue> queue;
  CompletionQueue::Create(&queue);
  ModelStats stats;
  std::vector<std::unique_ptr<ModelRuntime>> runtimes;
  runtimes.push_back(std::make_unique<RecordingRuntime>(std::chrono::microseconds(0), true));
  std::unique_ptr<DirectScheduler> scheduler;
  DirectScheduler::Create(std::move(runtimes), queue.get(), &stats, &scheduler);
  for (uint64_t i = 1; i <= 10; ++i) {  // odd tickets fail
    auto request = MakeRequest(i, i <= 4 ? 4 : 1);
    scheduler->Enqueue(&request);
  }
  auto done = Collect(queue.get(), 10);
  stats.RecordRejected(2, 1000);
  ModelStatsSnapshot snap = stats.Snapshot();
  EXPECT(snap.by_batch_size[4].success_count == 2);
  EXPECT(snap.by_batch_size[4].failed_count == 2);
  EXPECT(snap.by_batch_size[1].success_count == 3);
  EXPECT(snap.by_batch_size[1].failed_count == 3);
  EXPECT(snap.by_batch_size[2].failed_count == 1);
  EXPECT(snap.inference_count == 2 * 4 + 3 * 1);
  EXPECT(snap.execution_count == 5);
  int failures = 0;
  for (auto& request : done) failures += request->status.IsOk() ? 0 : 1;
  EXPECT(failures == 5);
}

TEST(StatsCountCacheHitsAsSuccessesWithoutExecution) {
  ModelStats stats;
  stats.RecordCacheHit(2, 1000, 4000, 500);
  stats.RecordCacheHit(2, 5000, 6000, 300);
  stats.RecordCacheMiss(700);
  ModelStatsSnapshot snap = stats.Snapshot();
  EXPECT(snap.by_batch_size[2].success_count == 2);
  EXPECT(snap.by_batch_size[2].success_ns == 3000 + 1000);
  EXPECT(snap.by_batch_size[2].queue_count == 2);
  EXPECT(snap.by_batch_size[2].queue_ns == 0);
  EXPECT(snap.by_batch_size[2].compute_count == 0);
  EXPECT(snap.inference_count == 0);
  EXPECT(snap.execution_count == 0);
  EXPECT(snap.cache_hit_count == 2);
  EXPECT(snap.cache_hit_ns == 800);
  EXPECT(snap.cache_miss_count == 1);
  EXPECT(snap.cache_miss_ns == 700);
  EXPECT(snap.last_inference_ns == 6000);
  uint64_t observed = 0;
  for (uint64_t count : snap.request_latency.counts) observed += count;
  EXPECT(observed == 2);
  observed = 0;
  for (uint64_t count : snap.compute_latency.counts) observed += count;
  EXPECT(observed == 0);
}

}  // namespace
}  // namespace pyserver

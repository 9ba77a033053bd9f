// Unit tests of DynamicBatcher.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "completion_queue.h"
#include "dynamic_batcher.h"
#include "host_memory_pool.h"
#include "model_stats.h"
#include "test_runtimes.h"
#include "unit_test.h"

namespace pyserver {
namespace {

using testing::Collect;
using testing::MakeRequest;

// Records each batch's tickets; the first request whose ticket is `gate`
// blocks until Open() so that the queue can fill behind it.
class GatedRuntime : public ModelRuntime {
 public:
  explicit GatedRuntime(uint64_t gate = 0, std::chrono::milliseconds slow = {})
      : gate_(gate), slow_(slow) {}

  void Execute(Batch* batch) override {
    for (InferRequest* request : batch->requests) {
      if (request->ticket == gate_) {
        std::unique_lock<std::mutex> lock(mu_);
        entered_ = true;
        cv_.notify_all();
        cv_.wait(lock, [this] { return open_; });
      }
    }
    if (slow_.count() > 0 && batch->requests[0]->ticket % 2 == 1) std::this_thread::sleep_for(slow_);
    std::vector<uint64_t> tickets;
    for (InferRequest* request : batch->requests) {
      tickets.push_back(request->ticket);
      request->result = request;
    }
    if (batch->requests.size() > 1 && !batch->gathered.empty() && batch->gathered[0].Data()) {
      gathered.emplace_back(static_cast<const float*>(batch->gathered[0].Data()),
                            static_cast<const float*>(batch->gathered[0].Data()) +
                                batch->gathered[0].Size() / sizeof(float));
    }
    std::lock_guard<std::mutex> lock(mu_);
    batches.push_back(tickets);
  }

  // Blocks until the gated request is inside Execute (so the instance is
  // busy and later requests queue behind it).
  void WaitEntered() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return entered_; });
  }

  bool Entered() {
    std::lock_guard<std::mutex> lock(mu_);
    return entered_;
  }

  void Open() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }

  std::vector<std::vector<uint64_t>> Batches() {
    std::lock_guard<std::mutex> lock(mu_);
    return batches;
  }

  std::vector<std::vector<float>> gathered;

 private:
  uint64_t gate_;
  std::chrono::milliseconds slow_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
  bool entered_ = false;
  std::vector<std::vector<uint64_t>> batches;
};

struct BatcherFixture {
  std::unique_ptr<CompletionQueue> queue;
  std::unique_ptr<HostMemoryPool> pool;
  ModelStats stats;
  std::vector<GatedRuntime*> runtimes;
  std::unique_ptr<DynamicBatcher> batcher;
  std::deque<float> values;  // one input element per request; addresses stay put

  BatcherFixture(const DynamicBatcherConfig& config, int instances = 1, uint64_t gate = 0,
                 std::chrono::milliseconds slow = {}) {
    CompletionQueue::Create(&queue);
    HostMemoryPool::Create(1 << 20, false, &pool);
    std::vector<std::unique_ptr<ModelRuntime>> owned;
    for (int i = 0; i < instances; ++i) {
      auto runtime = std::make_unique<GatedRuntime>(gate, slow);
      runtimes.push_back(runtime.get());
      owned.push_back(std::move(runtime));
    }
    Status status = DynamicBatcher::Create(config, std::move(owned), pool.get(), queue.get(),
                                           &stats, &batcher);
    if (!status.IsOk()) std::fprintf(stderr, "  Create: %s\n", status.Message().c_str());
  }

  Status Enqueue(uint64_t ticket, uint32_t batch_size = 1, uint64_t shape_key = 0,
                 uint32_t priority = 0, uint64_t timeout_us = 0) {
    auto request = MakeRequest(ticket, batch_size);
    request->shape_key = shape_key;
    request->priority = priority;
    request->timeout_us = timeout_us;
    values.push_back(static_cast<float>(ticket));
    request->inputs.push_back(InputRef{&values.back(), sizeof(float), {}});
    return batcher->Enqueue(&request);
  }

  void OpenAll() {
    for (GatedRuntime* runtime : runtimes) runtime->Open();
  }
};

DynamicBatcherConfig Batching(uint32_t max_batch_size, std::vector<uint32_t> preferred,
                              uint64_t delay_us) {
  DynamicBatcherConfig config;
  config.max_batch_size = max_batch_size;
  config.preferred_batch_sizes = std::move(preferred);
  config.max_queue_delay_us = delay_us;
  return config;
}

void SleepMs(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

TEST(BatcherRunsAPreferredSizeWithoutWaitingForTheDelay) {
  BatcherFixture f(Batching(8, {4}, 10'000'000));
  auto start = std::chrono::steady_clock::now();
  for (uint64_t i = 1; i <= 4; ++i) EXPECT(f.Enqueue(i).IsOk());
  EXPECT(Collect(f.queue.get(), 4).size() == 4);
  EXPECT(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));
  EXPECT(f.runtimes[0]->Batches() == (std::vector<std::vector<uint64_t>>{{1, 2, 3, 4}}));
}

TEST(BatcherRunsAPartialBatchWhenTheDelayExpires) {
  BatcherFixture f(Batching(8, {4}, 50'000));
  auto start = std::chrono::steady_clock::now();
  EXPECT(f.Enqueue(1).IsOk());
  EXPECT(f.Enqueue(2).IsOk());
  EXPECT(Collect(f.queue.get(), 2).size() == 2);
  EXPECT(std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(50));
  EXPECT(f.runtimes[0]->Batches() == (std::vector<std::vector<uint64_t>>{{1, 2}}));
}

TEST(BatcherNeverExceedsMaxBatchSize) {
  BatcherFixture f(Batching(4, {}, 0), 1, /*gate=*/1);
  EXPECT(f.Enqueue(1).IsOk());
  f.runtimes[0]->WaitEntered();  // request 1 holds the instance
  for (uint64_t i = 2; i <= 11; ++i) EXPECT(f.Enqueue(i).IsOk());
  f.OpenAll();
  EXPECT(Collect(f.queue.get(), 11).size() == 11);
  auto batches = f.runtimes[0]->Batches();
  EXPECT(batches.size() == 4);
  for (auto& batch : batches) EXPECT(batch.size() <= 4);
}

TEST(BatcherCountsBatchSizesNotRequests) {
  BatcherFixture f(Batching(8, {8}, 0), 1, /*gate=*/1);
  EXPECT(f.Enqueue(1).IsOk());
  f.runtimes[0]->WaitEntered();
  EXPECT(f.Enqueue(2, 3).IsOk());
  EXPECT(f.Enqueue(3, 3).IsOk());
  EXPECT(f.Enqueue(4, 3).IsOk());  // 3 + 3 + 3 > 8: waits for the next batch
  f.OpenAll();
  EXPECT(Collect(f.queue.get(), 4).size() == 4);
  EXPECT(f.runtimes[0]->Batches() == (std::vector<std::vector<uint64_t>>{{1}, {2, 3}, {4}}));
}

TEST(BatcherRunsARequestLargerThanThePreferredSizeAlone) {
  BatcherFixture f(Batching(8, {2}, 10'000'000));
  EXPECT(f.Enqueue(1, 6).IsOk());
  EXPECT(Collect(f.queue.get(), 1).size() == 1);
  EXPECT(f.runtimes[0]->Batches() == (std::vector<std::vector<uint64_t>>{{1}}));
}

TEST(BatcherNeverMixesShapes) {
  BatcherFixture f(Batching(8, {}, 0), 1, /*gate=*/1);
  EXPECT(f.Enqueue(1, 1, 7).IsOk());
  f.runtimes[0]->WaitEntered();
  EXPECT(f.Enqueue(2, 1, 7).IsOk());
  EXPECT(f.Enqueue(3, 1, 7).IsOk());
  EXPECT(f.Enqueue(4, 1, 9).IsOk());
  EXPECT(f.Enqueue(5, 1, 9).IsOk());
  f.OpenAll();
  EXPECT(Collect(f.queue.get(), 5).size() == 5);
  EXPECT(f.runtimes[0]->Batches() ==
         (std::vector<std::vector<uint64_t>>{{1}, {2, 3}, {4, 5}}));
}

TEST(BatcherGathersInputsInBatchOrder) {
  BatcherFixture f(Batching(8, {4}, 10'000'000));
  for (uint64_t i = 1; i <= 4; ++i) f.Enqueue(i);
  EXPECT(Collect(f.queue.get(), 4).size() == 4);
  EXPECT(f.runtimes[0]->gathered.size() == 1);
  EXPECT(f.runtimes[0]->gathered[0] == (std::vector<float>{1, 2, 3, 4}));
  HostMemoryPoolStats pool = f.pool->Stats();
  EXPECT(pool.bytes_in_use == 0);
}

TEST(BatcherPreservesOrderingAcrossInstances) {
  DynamicBatcherConfig config = Batching(1, {}, 0);
  config.preserve_ordering = true;
  // Odd tickets are slow: without ordering, 2 would overtake 1.
  BatcherFixture f(config, 2, 0, std::chrono::milliseconds(30));
  for (uint64_t i = 1; i <= 6; ++i) f.Enqueue(i);
  auto done = Collect(f.queue.get(), 6);
  EXPECT(done.size() == 6);
  for (size_t i = 0; i < done.size(); ++i) EXPECT(done[i]->ticket == i + 1);
}

TEST(BatcherRefusesRequestsBeyondMaxQueueSize) {
  DynamicBatcherConfig config = Batching(1, {}, 0);
  config.default_queue_policy.max_queue_size = 2;
  BatcherFixture f(config, 1, /*gate=*/1);
  EXPECT(f.Enqueue(1).IsOk());
  f.runtimes[0]->WaitEntered();
  EXPECT(f.Enqueue(2).IsOk());
  EXPECT(f.Enqueue(3).IsOk());
  Status full = f.Enqueue(4);
  EXPECT(full.Code() == StatusCode::kUnavailable);
  f.OpenAll();
  EXPECT(Collect(f.queue.get(), 3).size() == 3);
}

TEST(BatcherRejectsRequestsWhoseQueueTimeoutExpires) {
  DynamicBatcherConfig config = Batching(1, {}, 0);
  config.default_queue_policy.default_timeout_us = 10'000;
  BatcherFixture f(config, 1, /*gate=*/1);
  EXPECT(f.Enqueue(1).IsOk());
  f.runtimes[0]->WaitEntered();
  EXPECT(f.Enqueue(2).IsOk());
  SleepMs(40);
  f.OpenAll();
  auto done = Collect(f.queue.get(), 2);
  EXPECT(done.size() == 2);
  for (auto& request : done) {
    if (request->ticket == 2) {
      EXPECT(request->status.Code() == StatusCode::kUnavailable);
      EXPECT(request->status.Message() == "Request timeout expired");
    } else {
      EXPECT(request->status.IsOk());
    }
  }
  EXPECT(f.stats.Snapshot().by_batch_size[1].failed_count == 1);
}

TEST(BatcherHonoursARequestTimeoutOnlyWhenOverrideIsAllowed) {
  DynamicBatcherConfig config = Batching(1, {}, 0);
  BatcherFixture f(config, 1, /*gate=*/1);  // override not allowed
  EXPECT(f.Enqueue(1).IsOk());
  f.runtimes[0]->WaitEntered();
  EXPECT(f.Enqueue(2, 1, 0, 0, /*timeout_us=*/1000).IsOk());
  SleepMs(20);
  f.OpenAll();
  for (auto& request : Collect(f.queue.get(), 2)) EXPECT(request->status.IsOk());
}

TEST(BatcherMovesTimedOutRequestsBehindOthersUnderDelay) {
  DynamicBatcherConfig config = Batching(1, {}, 0);
  config.default_queue_policy.timeout_action = TimeoutAction::kDelay;
  config.default_queue_policy.allow_timeout_override = true;
  BatcherFixture f(config, 1, /*gate=*/1);
  EXPECT(f.Enqueue(1).IsOk());
  f.runtimes[0]->WaitEntered();
  EXPECT(f.Enqueue(2, 1, 0, 0, /*timeout_us=*/1000).IsOk());
  EXPECT(f.Enqueue(3).IsOk());
  EXPECT(f.Enqueue(4).IsOk());
  SleepMs(20);
  f.OpenAll();
  auto done = Collect(f.queue.get(), 4);
  EXPECT(done.size() == 4);
  for (auto& request : done) EXPECT(request->status.IsOk());
  EXPECT(f.runtimes[0]->Batches() == (std::vector<std::vector<uint64_t>>{{1}, {3}, {4}, {2}}));
}

TEST(BatcherServesHigherPriorityLevelsFirst) {
  DynamicBatcherConfig config = Batching(1, {}, 0);
  config.priority_levels = 2;
  config.default_priority_level = 2;
  BatcherFixture f(config, 1, /*gate=*/1);
  EXPECT(f.Enqueue(1).IsOk());
  f.runtimes[0]->WaitEntered();
  EXPECT(f.Enqueue(2).IsOk());               // default level 2
  EXPECT(f.Enqueue(3, 1, 0, 1).IsOk());      // level 1
  EXPECT(f.Enqueue(4, 1, 0, 3).Code() == StatusCode::kInvalidArg);
  f.OpenAll();
  EXPECT(Collect(f.queue.get(), 3).size() == 3);
  EXPECT(f.runtimes[0]->Batches() == (std::vector<std::vector<uint64_t>>{{1}, {3}, {2}}));
}

TEST(BatcherStopFinishesQueuedRequestsWithoutWaitingForTheDelay) {
  BatcherFixture f(Batching(8, {8}, 60'000'000));
  EXPECT(f.Enqueue(1).IsOk());
  EXPECT(f.Enqueue(2).IsOk());
  auto start = std::chrono::steady_clock::now();
  f.batcher->Stop();
  EXPECT(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
  std::vector<std::unique_ptr<InferRequest>> out;
  f.queue->Drain(&out);
  EXPECT(out.size() == 2);
}

TEST(BatcherKeepsGrowingThePendingBatchWhileEveryInstanceIsBusy) {
  BatcherFixture f(Batching(8, {}, 0), 1, /*gate=*/1);
  EXPECT(f.Enqueue(1).IsOk());
  f.runtimes[0]->WaitEntered();
  for (uint64_t i = 2; i <= 6; ++i) EXPECT(f.Enqueue(i).IsOk());
  f.OpenAll();
  EXPECT(Collect(f.queue.get(), 6).size() == 6);
  EXPECT(f.runtimes[0]->Batches() == (std::vector<std::vector<uint64_t>>{{1}, {2, 3, 4, 5, 6}}));
}

TEST(BatcherHandsBatchesToAnIdleInstanceWhileAnotherIsBusy) {
  // Every instance blocks on ticket 1; the other must serve the rest meanwhile.
  BatcherFixture f(Batching(1, {}, 0), 2, /*gate=*/1);
  EXPECT(f.Enqueue(1).IsOk());
  GatedRuntime* busy = nullptr;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (busy == nullptr && std::chrono::steady_clock::now() < deadline) {
    for (GatedRuntime* runtime : f.runtimes) {
      if (runtime->Entered()) busy = runtime;
    }
    SleepMs(1);
  }
  EXPECT(busy != nullptr);
  for (uint64_t i = 2; i <= 5; ++i) EXPECT(f.Enqueue(i).IsOk());
  auto done = Collect(f.queue.get(), 4);
  EXPECT(done.size() == 4);
  for (auto& request : done) EXPECT(request->ticket != 1);
  f.OpenAll();
  EXPECT(Collect(f.queue.get(), 1).size() == 1);
}

TEST(BatcherRunsTheLongestPreferredPrefixAndKeepsTheRestQueued) {
  BatcherFixture f(Batching(8, {2, 4}, 0), 1, /*gate=*/1);
  EXPECT(f.Enqueue(1).IsOk());
  f.runtimes[0]->WaitEntered();
  for (uint64_t i = 2; i <= 6; ++i) EXPECT(f.Enqueue(i).IsOk());
  f.OpenAll();
  EXPECT(Collect(f.queue.get(), 6).size() == 6);
  EXPECT(f.runtimes[0]->Batches() == (std::vector<std::vector<uint64_t>>{{1}, {2, 3, 4, 5}, {6}}));
}

TEST(BatcherRunsAnotherShapeAtTheHeadBeforeLaterRequestsOfTheFirstShape) {
  BatcherFixture f(Batching(8, {}, 0), 1, /*gate=*/1);
  EXPECT(f.Enqueue(1, 1, 7).IsOk());
  f.runtimes[0]->WaitEntered();
  EXPECT(f.Enqueue(2, 1, 7).IsOk());
  EXPECT(f.Enqueue(3, 1, 9).IsOk());
  EXPECT(f.Enqueue(4, 1, 7).IsOk());
  EXPECT(f.Enqueue(5, 1, 7).IsOk());
  f.OpenAll();
  EXPECT(Collect(f.queue.get(), 5).size() == 5);
  EXPECT(f.runtimes[0]->Batches() ==
         (std::vector<std::vector<uint64_t>>{{1}, {2}, {3}, {4, 5}}));
}

TEST(BatcherReformsThePendingBatchWhenAHigherPriorityRequestArrives) {
  DynamicBatcherConfig config = Batching(4, {}, 10'000'000);
  config.priority_levels = 2;
  config.default_priority_level = 2;
  BatcherFixture f(config);
  auto start = std::chrono::steady_clock::now();
  EXPECT(f.Enqueue(1).IsOk());  // level 2: waits for company
  EXPECT(f.Enqueue(2).IsOk());
  SleepMs(20);
  EXPECT(f.Enqueue(3, 1, 0, 1).IsOk());  // level 1: goes ahead of the pending batch
  EXPECT(f.Enqueue(4, 1, 0, 1).IsOk());  // 4 requests: full, runs without the delay
  EXPECT(Collect(f.queue.get(), 4).size() == 4);
  EXPECT(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
  EXPECT(f.runtimes[0]->Batches() == (std::vector<std::vector<uint64_t>>{{3, 4, 1, 2}}));
}

TEST(BatcherRejectsATimedOutRequestOutOfThePendingBatchAndKeepsTheRest) {
  DynamicBatcherConfig config = Batching(4, {}, 10'000'000);
  config.default_queue_policy.allow_timeout_override = true;
  BatcherFixture f(config);
  EXPECT(f.Enqueue(1).IsOk());
  EXPECT(f.Enqueue(2, 1, 0, 0, /*timeout_us=*/10'000).IsOk());
  auto rejected = Collect(f.queue.get(), 1);
  EXPECT(rejected.size() == 1 && rejected[0]->ticket == 2);
  EXPECT(rejected.size() == 1 && rejected[0]->status.Message() == "Request timeout expired");
  for (uint64_t i = 3; i <= 5; ++i) EXPECT(f.Enqueue(i).IsOk());
  auto done = Collect(f.queue.get(), 4);
  EXPECT(done.size() == 4);
  for (auto& request : done) EXPECT(request->status.IsOk());
  EXPECT(f.runtimes[0]->Batches() == (std::vector<std::vector<uint64_t>>{{1, 3, 4, 5}}));
}

TEST(BatcherServesAThousandQueuedRequestsInOrderInFullBatches) {
  BatcherFixture f(Batching(8, {}, 0), 1, /*gate=*/1);
  EXPECT(f.Enqueue(1).IsOk());
  f.runtimes[0]->WaitEntered();
  for (uint64_t i = 2; i <= 1001; ++i) EXPECT(f.Enqueue(i).IsOk());
  f.OpenAll();
  EXPECT(Collect(f.queue.get(), 1001).size() == 1001);
  auto batches = f.runtimes[0]->Batches();
  EXPECT(batches.size() == 1 + 125);
  uint64_t next = 1;
  for (size_t b = 0; b < batches.size(); ++b) {
    EXPECT(b == 0 || batches[b].size() == 8);
    for (uint64_t ticket : batches[b]) EXPECT(ticket == next++);
  }
  EXPECT(f.batcher->InflightCount() == 0);
}

// -- cancellation ---------------------------------------------------------------

TEST(BatcherCancelsAQueuedRequestWhichNeverRuns) {
  BatcherFixture f(Batching(1, {}, 0), 1, /*gate=*/1);
  EXPECT(f.Enqueue(1).IsOk());
  f.runtimes[0]->WaitEntered();
  EXPECT(f.Enqueue(2).IsOk());
  EXPECT(f.Enqueue(3).IsOk());
  EXPECT(f.batcher->Cancel(2));
  EXPECT(!f.batcher->Cancel(2));  // once
  auto cancelled = Collect(f.queue.get(), 1);  // completes while the instance is still busy
  EXPECT(cancelled.size() == 1 && cancelled[0]->ticket == 2);
  EXPECT(cancelled[0]->status.Code() == StatusCode::kCancelled);
  EXPECT(f.batcher->InflightCount() == 2);
  f.OpenAll();
  EXPECT(Collect(f.queue.get(), 2).size() == 2);
  EXPECT(f.runtimes[0]->Batches() == (std::vector<std::vector<uint64_t>>{{1}, {3}}));
  ModelStatsSnapshot snapshot = f.stats.Snapshot();
  EXPECT(snapshot.cancelled_count == 1);
  EXPECT(snapshot.by_batch_size[1].failed_count == 1);
  EXPECT(snapshot.execution_count == 2);
}

TEST(BatcherCancelFreesTheRequestsPlaceUnderMaxQueueSize) {
  DynamicBatcherConfig config = Batching(1, {}, 0);
  config.default_queue_policy.max_queue_size = 2;
  BatcherFixture f(config, 1, /*gate=*/1);
  EXPECT(f.Enqueue(1).IsOk());
  f.runtimes[0]->WaitEntered();
  EXPECT(f.Enqueue(2).IsOk());
  EXPECT(f.Enqueue(3).IsOk());
  EXPECT(f.Enqueue(4).Code() == StatusCode::kUnavailable);
  EXPECT(f.batcher->Cancel(3));
  EXPECT(f.Enqueue(4).IsOk());
  f.OpenAll();
  EXPECT(Collect(f.queue.get(), 4).size() == 4);
  EXPECT(f.runtimes[0]->Batches() == (std::vector<std::vector<uint64_t>>{{1}, {2}, {4}}));
}

TEST(BatcherCancelLeavesARunningOrUnknownRequestAlone) {
  BatcherFixture f(Batching(1, {}, 0), 1, /*gate=*/1);
  EXPECT(f.Enqueue(1).IsOk());
  f.runtimes[0]->WaitEntered();
  EXPECT(!f.batcher->Cancel(1));   // executing: runs to completion
  EXPECT(!f.batcher->Cancel(42));  // never accepted
  f.OpenAll();
  auto done = Collect(f.queue.get(), 1);
  EXPECT(done.size() == 1 && done[0]->status.IsOk());
  EXPECT(!f.batcher->Cancel(1));   // completed
  f.batcher->Stop();
  std::vector<std::unique_ptr<InferRequest>> extra;
  EXPECT(f.queue->Drain(&extra) == 0);
  EXPECT(f.stats.Snapshot().cancelled_count == 0);
}

TEST(BatcherCancelTakesARequestOutOfThePendingBatch) {
  BatcherFixture f(Batching(4, {3}, 0), 1, /*gate=*/1);
  EXPECT(f.Enqueue(1).IsOk());
  f.runtimes[0]->WaitEntered();
  for (uint64_t i = 2; i <= 5; ++i) EXPECT(f.Enqueue(i).IsOk());
  EXPECT(f.batcher->Cancel(3));
  f.OpenAll();
  EXPECT(Collect(f.queue.get(), 5).size() == 5);
  EXPECT(f.runtimes[0]->Batches() == (std::vector<std::vector<uint64_t>>{{1}, {2, 4, 5}}));
}

TEST(BatcherCancelledRequestWithAQueueTimeoutCompletesOnce) {
  DynamicBatcherConfig config = Batching(1, {}, 0);
  config.default_queue_policy.default_timeout_us = 20'000;
  BatcherFixture f(config, 1, /*gate=*/1);
  EXPECT(f.Enqueue(1).IsOk());
  f.runtimes[0]->WaitEntered();
  EXPECT(f.Enqueue(2).IsOk());
  EXPECT(f.batcher->Cancel(2));
  SleepMs(60);  // past its deadline: it must not be rejected as well
  f.OpenAll();
  auto done = Collect(f.queue.get(), 3);
  EXPECT(done.size() == 2);
  for (auto& request : done) {
    if (request->ticket == 2) EXPECT(request->status.Code() == StatusCode::kCancelled);
  }
}

TEST(BatcherStopsWithCancelledRequestsInItsQueue) {
  BatcherFixture f(Batching(2, {}, 0), 1, /*gate=*/1);
  EXPECT(f.Enqueue(1).IsOk());
  f.runtimes[0]->WaitEntered();
  for (uint64_t i = 2; i <= 6; ++i) EXPECT(f.Enqueue(i).IsOk());
  std::thread stopper([&f] { f.batcher->Stop(); });
  SleepMs(20);  // Stop waits for the queue to drain
  for (uint64_t i = 2; i <= 6; ++i) EXPECT(f.batcher->Cancel(i));
  f.OpenAll();
  stopper.join();
  std::vector<std::unique_ptr<InferRequest>> out;
  f.queue->Drain(&out);
  EXPECT(out.size() == 6);
  EXPECT(f.runtimes[0]->Batches() == (std::vector<std::vector<uint64_t>>{{1}}));
  EXPECT(f.batcher->InflightCount() == 0);
}

TEST(BatcherCompletesEachRequestOnceUnderConcurrentCancels) {
  BatcherFixture f(Batching(4, {}, 100), 2);
  constexpr uint64_t kRequests = 4000;
  std::mutex enqueue_mu;  // the fixture's input storage is not thread safe
  std::atomic<uint64_t> cancelled{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t i = t + 1; i <= kRequests; i += 4) {
        {
          std::lock_guard<std::mutex> lock(enqueue_mu);
          f.Enqueue(i);
        }
        if (i > 8 && i % 3 == 0 && f.batcher->Cancel(i - 8)) cancelled.fetch_add(1);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  auto done = Collect(f.queue.get(), kRequests);
  EXPECT(done.size() == kRequests);
  std::vector<int> seen(kRequests + 1, 0);
  uint64_t cancelled_done = 0;
  for (auto& request : done) {
    seen[request->ticket] += 1;
    if (request->status.Code() == StatusCode::kCancelled) ++cancelled_done;
  }
  for (uint64_t i = 1; i <= kRequests; ++i) EXPECT(seen[i] == 1);
  EXPECT(cancelled_done == cancelled.load());
  EXPECT(f.stats.Snapshot().cancelled_count == cancelled.load());
  uint64_t executed = 0;
  for (GatedRuntime* runtime : f.runtimes) {
    for (auto& batch : runtime->Batches()) executed += batch.size();
  }
  EXPECT(executed + cancelled.load() == kRequests);
  EXPECT(f.batcher->InflightCount() == 0);
}

}  // namespace
}  // namespace pyserver

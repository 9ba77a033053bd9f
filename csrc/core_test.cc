// Unit tests of the C++ core, without Python. Built and run by
// tests/core/test_core_cpp.py; prints "N passed, M failed".

#include <poll.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "completion_queue.h"
#include "cuda_runtime.h"
#include "cuda_stream.h"
#include "direct_scheduler.h"
#include "dynamic_batcher.h"
#include "host_memory_pool.h"
#include "model_stats.h"

namespace pyserver {
namespace {

int passed = 0;
int failed = 0;
int skipped = 0;
const char* only = nullptr;  // run just this test (argv[1])

#define EXPECT(cond)                                                   \
  do {                                                                 \
    if (!(cond)) {                                                     \
      std::fprintf(stderr, "  %s:%d: expected %s\n", __FILE__, __LINE__, \
                   #cond);                                             \
      ok = false;                                                      \
    }                                                                  \
  } while (false)

// A test returns true/false; it may call Skip() first to be counted as skipped.
const char* skip_reason = nullptr;
void Skip(const char* reason) { skip_reason = reason; }

void Run(const char* name, const std::function<bool()>& test) {
  if (only != nullptr && std::string(only) != name) return;
  skip_reason = nullptr;
  bool ok = test();
  if (skip_reason != nullptr) {
    std::printf("SKIP %s: %s\n", name, skip_reason);
    skipped += 1;
    return;
  }
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", name);
  (ok ? passed : failed) += 1;
}

// Records which requests it ran; optionally sleeps and fails odd tickets.
class RecordingRuntime : public ModelRuntime {
 public:
  explicit RecordingRuntime(std::chrono::microseconds delay = {}, bool fail_odd = false)
      : delay_(delay), fail_odd_(fail_odd) {}

  void Execute(Batch* batch) override {
    int now = running_.fetch_add(1) + 1;
    int seen = max_running_.load();
    while (now > seen && !max_running_.compare_exchange_weak(seen, now)) {
    }
    if (delay_.count() > 0) std::this_thread::sleep_for(delay_);
    for (InferRequest* request : batch->requests) {
      executed.push_back(request->ticket);
      request->result = request;  // any non-null result
      if (fail_odd_ && request->ticket % 2 == 1) {
        request->status = Status(StatusCode::kInternal, "odd ticket");
      }
    }
    running_.fetch_sub(1);
  }

  static int MaxRunning() { return max_running_.load(); }
  static void Reset() { max_running_ = 0; }

  std::vector<uint64_t> executed;

 private:
  std::chrono::microseconds delay_;
  bool fail_odd_;
  static std::atomic<int> running_;
  static std::atomic<int> max_running_;
};
std::atomic<int> RecordingRuntime::running_{0};
std::atomic<int> RecordingRuntime::max_running_{0};

std::unique_ptr<InferRequest> MakeRequest(uint64_t ticket, uint32_t batch_size = 1) {
  auto request = std::make_unique<InferRequest>();
  request->ticket = ticket;
  request->batch_size = batch_size;
  return request;
}

// Drains until `count` completions arrived or 5 s passed.
std::vector<std::unique_ptr<InferRequest>> Collect(CompletionQueue* queue, size_t count) {
  std::vector<std::unique_ptr<InferRequest>> out;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (out.size() < count && std::chrono::steady_clock::now() < deadline) {
    pollfd fd{queue->Fd(), POLLIN, 0};
    poll(&fd, 1, 100);
    queue->Drain(&out);
  }
  return out;
}

bool CompletionQueueSignalsOnlyWhenNonEmpty() {
  bool ok = true;
  std::unique_ptr<CompletionQueue> queue;
  EXPECT(CompletionQueue::Create(&queue).IsOk());
  pollfd fd{queue->Fd(), POLLIN, 0};
  EXPECT(poll(&fd, 1, 0) == 0);
  queue->Push(MakeRequest(1));
  queue->Push(MakeRequest(2));
  EXPECT(poll(&fd, 1, 0) == 1);
  std::vector<std::unique_ptr<InferRequest>> out;
  EXPECT(queue->Drain(&out) == 2);
  EXPECT(out.size() == 2 && out[0]->ticket == 1 && out[1]->ticket == 2);
  EXPECT(poll(&fd, 1, 0) == 0);
  return ok;
}

bool CompletionQueueLosesNothingUnderConcurrentPushes() {
  bool ok = true;
  std::unique_ptr<CompletionQueue> queue;
  EXPECT(CompletionQueue::Create(&queue).IsOk());
  constexpr int kThreads = 4, kEach = 5000;
  std::vector<std::thread> producers;
  for (int t = 0; t < kThreads; ++t) {
    producers.emplace_back([&queue, t] {
      for (int i = 0; i < kEach; ++i) queue->Push(MakeRequest(t * kEach + i));
    });
  }
  auto out = Collect(queue.get(), kThreads * kEach);
  for (auto& thread : producers) thread.join();
  queue->Drain(&out);
  EXPECT(out.size() == static_cast<size_t>(kThreads * kEach));
  return ok;
}

bool DirectSchedulerRunsRequestsInArrivalOrderOnOneInstance() {
  bool ok = true;
  std::unique_ptr<CompletionQueue> queue;
  CompletionQueue::Create(&queue);
  ModelStats stats;
  auto runtime = std::make_unique<RecordingRuntime>();
  RecordingRuntime* raw = runtime.get();
  std::vector<std::unique_ptr<ModelRuntime>> runtimes;
  runtimes.push_back(std::move(runtime));
  std::unique_ptr<DirectScheduler> scheduler;
  EXPECT(DirectScheduler::Create(std::move(runtimes), queue.get(), &stats, &scheduler).IsOk());
  for (uint64_t i = 1; i <= 100; ++i) {
    auto request = MakeRequest(i);
    EXPECT(scheduler->Enqueue(&request).IsOk());
    EXPECT(request == nullptr);
  }
  auto done = Collect(queue.get(), 100);
  EXPECT(done.size() == 100);
  scheduler->Stop();
  for (uint64_t i = 0; i < raw->executed.size(); ++i) EXPECT(raw->executed[i] == i + 1);
  EXPECT(scheduler->InflightCount() == 0);
  return ok;
}

bool DirectSchedulerRunsInstancesInParallel() {
  bool ok = true;
  RecordingRuntime::Reset();
  std::unique_ptr<CompletionQueue> queue;
  CompletionQueue::Create(&queue);
  ModelStats stats;
  std::vector<std::unique_ptr<ModelRuntime>> runtimes;
  for (int i = 0; i < 3; ++i) {
    runtimes.push_back(std::make_unique<RecordingRuntime>(std::chrono::milliseconds(20)));
  }
  std::unique_ptr<DirectScheduler> scheduler;
  DirectScheduler::Create(std::move(runtimes), queue.get(), &stats, &scheduler);
  for (uint64_t i = 1; i <= 9; ++i) {
    auto request = MakeRequest(i);
    scheduler->Enqueue(&request);
  }
  EXPECT(Collect(queue.get(), 9).size() == 9);
  EXPECT(RecordingRuntime::MaxRunning() == 3);
  return ok;
}

bool StopFinishesEveryAcceptedRequestThenRefusesNewOnes() {
  bool ok = true;
  std::unique_ptr<CompletionQueue> queue;
  CompletionQueue::Create(&queue);
  ModelStats stats;
  std::vector<std::unique_ptr<ModelRuntime>> runtimes;
  runtimes.push_back(std::make_unique<RecordingRuntime>(std::chrono::milliseconds(2)));
  std::unique_ptr<DirectScheduler> scheduler;
  DirectScheduler::Create(std::move(runtimes), queue.get(), &stats, &scheduler);
  for (uint64_t i = 1; i <= 20; ++i) {
    auto request = MakeRequest(i);
    scheduler->Enqueue(&request);
  }
  scheduler->Stop();
  std::vector<std::unique_ptr<InferRequest>> out;
  queue->Drain(&out);
  EXPECT(out.size() == 20);
  auto late = MakeRequest(99);
  Status status = scheduler->Enqueue(&late);
  EXPECT(status.Code() == StatusCode::kUnavailable);
  EXPECT(late != nullptr);  // refused: the caller still owns it
  return ok;
}

bool StatsCountSuccessFailureAndBatchSizes() {
  bool ok = true;
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
  return ok;
}

bool CreateRefusesAModelWithoutInstances() {
  bool ok = true;
  std::unique_ptr<CompletionQueue> queue;
  CompletionQueue::Create(&queue);
  ModelStats stats;
  std::unique_ptr<DirectScheduler> scheduler;
  Status status = DirectScheduler::Create({}, queue.get(), &stats, &scheduler);
  EXPECT(status.Code() == StatusCode::kInvalidArg);
  EXPECT(scheduler == nullptr);
  return ok;
}


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
  std::vector<float> values;  // one input element per request, kept alive here

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
    values.reserve(1000);
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

bool BatcherRunsAPreferredSizeWithoutWaitingForTheDelay() {
  bool ok = true;
  BatcherFixture f(Batching(8, {4}, 10'000'000));
  auto start = std::chrono::steady_clock::now();
  for (uint64_t i = 1; i <= 4; ++i) EXPECT(f.Enqueue(i).IsOk());
  EXPECT(Collect(f.queue.get(), 4).size() == 4);
  EXPECT(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));
  EXPECT(f.runtimes[0]->Batches() == (std::vector<std::vector<uint64_t>>{{1, 2, 3, 4}}));
  return ok;
}

bool BatcherRunsAPartialBatchWhenTheDelayExpires() {
  bool ok = true;
  BatcherFixture f(Batching(8, {4}, 50'000));
  auto start = std::chrono::steady_clock::now();
  EXPECT(f.Enqueue(1).IsOk());
  EXPECT(f.Enqueue(2).IsOk());
  EXPECT(Collect(f.queue.get(), 2).size() == 2);
  EXPECT(std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(50));
  EXPECT(f.runtimes[0]->Batches() == (std::vector<std::vector<uint64_t>>{{1, 2}}));
  return ok;
}

bool BatcherNeverExceedsMaxBatchSize() {
  bool ok = true;
  BatcherFixture f(Batching(4, {}, 0), 1, /*gate=*/1);
  EXPECT(f.Enqueue(1).IsOk());
  f.runtimes[0]->WaitEntered();  // request 1 holds the instance
  for (uint64_t i = 2; i <= 11; ++i) EXPECT(f.Enqueue(i).IsOk());
  f.OpenAll();
  EXPECT(Collect(f.queue.get(), 11).size() == 11);
  auto batches = f.runtimes[0]->Batches();
  EXPECT(batches.size() == 4);
  for (auto& batch : batches) EXPECT(batch.size() <= 4);
  return ok;
}

bool BatcherCountsBatchSizesNotRequests() {
  bool ok = true;
  BatcherFixture f(Batching(8, {8}, 0), 1, /*gate=*/1);
  EXPECT(f.Enqueue(1).IsOk());
  f.runtimes[0]->WaitEntered();
  EXPECT(f.Enqueue(2, 3).IsOk());
  EXPECT(f.Enqueue(3, 3).IsOk());
  EXPECT(f.Enqueue(4, 3).IsOk());  // 3 + 3 + 3 > 8: waits for the next batch
  f.OpenAll();
  EXPECT(Collect(f.queue.get(), 4).size() == 4);
  EXPECT(f.runtimes[0]->Batches() == (std::vector<std::vector<uint64_t>>{{1}, {2, 3}, {4}}));
  return ok;
}

bool BatcherRunsARequestLargerThanThePreferredSizeAlone() {
  bool ok = true;
  BatcherFixture f(Batching(8, {2}, 10'000'000));
  EXPECT(f.Enqueue(1, 6).IsOk());
  EXPECT(Collect(f.queue.get(), 1).size() == 1);
  EXPECT(f.runtimes[0]->Batches() == (std::vector<std::vector<uint64_t>>{{1}}));
  return ok;
}

bool BatcherNeverMixesShapes() {
  bool ok = true;
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
  return ok;
}

bool BatcherGathersInputsInBatchOrder() {
  bool ok = true;
  BatcherFixture f(Batching(8, {4}, 10'000'000));
  for (uint64_t i = 1; i <= 4; ++i) f.Enqueue(i);
  EXPECT(Collect(f.queue.get(), 4).size() == 4);
  EXPECT(f.runtimes[0]->gathered.size() == 1);
  EXPECT(f.runtimes[0]->gathered[0] == (std::vector<float>{1, 2, 3, 4}));
  HostMemoryPoolStats pool = f.pool->Stats();
  EXPECT(pool.bytes_in_use == 0);
  return ok;
}

bool BatcherPreservesOrderingAcrossInstances() {
  bool ok = true;
  DynamicBatcherConfig config = Batching(1, {}, 0);
  config.preserve_ordering = true;
  // Odd tickets are slow: without ordering, 2 would overtake 1.
  BatcherFixture f(config, 2, 0, std::chrono::milliseconds(30));
  for (uint64_t i = 1; i <= 6; ++i) f.Enqueue(i);
  auto done = Collect(f.queue.get(), 6);
  EXPECT(done.size() == 6);
  for (size_t i = 0; i < done.size(); ++i) EXPECT(done[i]->ticket == i + 1);
  return ok;
}

bool BatcherRefusesRequestsBeyondMaxQueueSize() {
  bool ok = true;
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
  return ok;
}

bool BatcherRejectsRequestsWhoseQueueTimeoutExpires() {
  bool ok = true;
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
  return ok;
}

bool BatcherHonoursARequestTimeoutOnlyWhenOverrideIsAllowed() {
  bool ok = true;
  DynamicBatcherConfig config = Batching(1, {}, 0);
  BatcherFixture f(config, 1, /*gate=*/1);  // override not allowed
  EXPECT(f.Enqueue(1).IsOk());
  f.runtimes[0]->WaitEntered();
  EXPECT(f.Enqueue(2, 1, 0, 0, /*timeout_us=*/1000).IsOk());
  SleepMs(20);
  f.OpenAll();
  for (auto& request : Collect(f.queue.get(), 2)) EXPECT(request->status.IsOk());
  return ok;
}

bool BatcherMovesTimedOutRequestsBehindOthersUnderDelay() {
  bool ok = true;
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
  return ok;
}

bool BatcherServesHigherPriorityLevelsFirst() {
  bool ok = true;
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
  return ok;
}

bool BatcherStopFinishesQueuedRequestsWithoutWaitingForTheDelay() {
  bool ok = true;
  BatcherFixture f(Batching(8, {8}, 60'000'000));
  EXPECT(f.Enqueue(1).IsOk());
  EXPECT(f.Enqueue(2).IsOk());
  auto start = std::chrono::steady_clock::now();
  f.batcher->Stop();
  EXPECT(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
  std::vector<std::unique_ptr<InferRequest>> out;
  f.queue->Drain(&out);
  EXPECT(out.size() == 2);
  return ok;
}

bool PoolReusesBuffersOfTheSameSizeClass() {
  bool ok = true;
  std::unique_ptr<HostMemoryPool> pool;
  EXPECT(HostMemoryPool::Create(1 << 20, false, &pool).IsOk());
  void* first = nullptr;
  {
    PooledBuffer buffer;
    EXPECT(pool->Allocate(1000, &buffer).IsOk());
    EXPECT(buffer.Capacity() == 1024 && buffer.Size() == 1000);
    EXPECT(reinterpret_cast<uintptr_t>(buffer.Data()) % 64 == 0);
    first = buffer.Data();
    EXPECT(pool->Stats().bytes_in_use == 1024);
  }
  PooledBuffer again;
  EXPECT(pool->Allocate(700, &again).IsOk());
  EXPECT(again.Data() == first);
  HostMemoryPoolStats stats = pool->Stats();
  EXPECT(stats.allocations == 2 && stats.reuses == 1);
  EXPECT(!stats.pinned);
  return ok;
}

bool PoolReleasesBuffersBeyondItsCacheLimit() {
  bool ok = true;
  std::unique_ptr<HostMemoryPool> pool;
  HostMemoryPool::Create(2048, false, &pool);
  {
    PooledBuffer a, b, c;
    pool->Allocate(1024, &a);
    pool->Allocate(1024, &b);
    pool->Allocate(1024, &c);
  }
  EXPECT(pool->Stats().bytes_cached == 2048);
  EXPECT(pool->Stats().bytes_in_use == 0);
  return ok;
}

bool CudaStreamRoundTripsThroughDeviceMemory() {
  bool ok = true;
  const CudaRuntime* cuda = CudaRuntime::Get();
  if (cuda == nullptr) {
    Skip("no CUDA runtime library (libcudart) or no CUDA device on this machine");
    return true;
  }
  std::unique_ptr<CudaStream> stream;
  EXPECT(CudaStream::Create(0, &stream).IsOk());
  std::unique_ptr<HostMemoryPool> pool;
  EXPECT(HostMemoryPool::Create(1 << 20, true, &pool).IsOk());
  EXPECT(pool->Stats().pinned);
  PooledBuffer host_in, host_out;
  EXPECT(pool->Allocate(4096, &host_in).IsOk());
  EXPECT(pool->Allocate(4096, &host_out).IsOk());
  for (int i = 0; i < 1024; ++i) static_cast<float*>(host_in.Data())[i] = static_cast<float>(i);
  void* device = cuda->DeviceAlloc(0, 4096);
  EXPECT(device != nullptr);
  EXPECT(stream->CopyToDevice(device, host_in.Data(), 4096).IsOk());
  EXPECT(stream->CopyToHost(host_out.Data(), device, 4096).IsOk());
  EXPECT(stream->Synchronize().IsOk());
  EXPECT(std::memcmp(host_in.Data(), host_out.Data(), 4096) == 0);
  cuda->DeviceFree(device);
  return ok;
}

bool CudaStreamCreateFailsCleanlyWithoutADevice() {
  bool ok = true;
  std::unique_ptr<CudaStream> stream;
  const int missing = CudaRuntime::Get() == nullptr ? 0 : CudaRuntime::Get()->DeviceCount();
  Status status = CudaStream::Create(missing, &stream);
  EXPECT(status.Code() == StatusCode::kUnavailable);
  EXPECT(stream == nullptr);
  return ok;
}

}  // namespace
}  // namespace pyserver

int main(int argc, char** argv) {
  using namespace pyserver;
  if (argc > 1) only = argv[1];
  Run("CompletionQueueSignalsOnlyWhenNonEmpty", CompletionQueueSignalsOnlyWhenNonEmpty);
  Run("CompletionQueueLosesNothingUnderConcurrentPushes",
      CompletionQueueLosesNothingUnderConcurrentPushes);
  Run("DirectSchedulerRunsRequestsInArrivalOrderOnOneInstance",
      DirectSchedulerRunsRequestsInArrivalOrderOnOneInstance);
  Run("DirectSchedulerRunsInstancesInParallel", DirectSchedulerRunsInstancesInParallel);
  Run("StopFinishesEveryAcceptedRequestThenRefusesNewOnes",
      StopFinishesEveryAcceptedRequestThenRefusesNewOnes);
  Run("StatsCountSuccessFailureAndBatchSizes", StatsCountSuccessFailureAndBatchSizes);
  Run("CreateRefusesAModelWithoutInstances", CreateRefusesAModelWithoutInstances);
  Run("BatcherRunsAPreferredSizeWithoutWaitingForTheDelay",
      BatcherRunsAPreferredSizeWithoutWaitingForTheDelay);
  Run("BatcherRunsAPartialBatchWhenTheDelayExpires", BatcherRunsAPartialBatchWhenTheDelayExpires);
  Run("BatcherNeverExceedsMaxBatchSize", BatcherNeverExceedsMaxBatchSize);
  Run("BatcherCountsBatchSizesNotRequests", BatcherCountsBatchSizesNotRequests);
  Run("BatcherRunsARequestLargerThanThePreferredSizeAlone",
      BatcherRunsARequestLargerThanThePreferredSizeAlone);
  Run("BatcherNeverMixesShapes", BatcherNeverMixesShapes);
  Run("BatcherGathersInputsInBatchOrder", BatcherGathersInputsInBatchOrder);
  Run("BatcherPreservesOrderingAcrossInstances", BatcherPreservesOrderingAcrossInstances);
  Run("BatcherRefusesRequestsBeyondMaxQueueSize", BatcherRefusesRequestsBeyondMaxQueueSize);
  Run("BatcherRejectsRequestsWhoseQueueTimeoutExpires",
      BatcherRejectsRequestsWhoseQueueTimeoutExpires);
  Run("BatcherHonoursARequestTimeoutOnlyWhenOverrideIsAllowed",
      BatcherHonoursARequestTimeoutOnlyWhenOverrideIsAllowed);
  Run("BatcherMovesTimedOutRequestsBehindOthersUnderDelay",
      BatcherMovesTimedOutRequestsBehindOthersUnderDelay);
  Run("BatcherServesHigherPriorityLevelsFirst", BatcherServesHigherPriorityLevelsFirst);
  Run("BatcherStopFinishesQueuedRequestsWithoutWaitingForTheDelay",
      BatcherStopFinishesQueuedRequestsWithoutWaitingForTheDelay);
  Run("PoolReusesBuffersOfTheSameSizeClass", PoolReusesBuffersOfTheSameSizeClass);
  Run("PoolReleasesBuffersBeyondItsCacheLimit", PoolReleasesBuffersBeyondItsCacheLimit);
  Run("CudaStreamRoundTripsThroughDeviceMemory", CudaStreamRoundTripsThroughDeviceMemory);
  Run("CudaStreamCreateFailsCleanlyWithoutADevice", CudaStreamCreateFailsCleanlyWithoutADevice);
  std::printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
  return failed == 0 ? 0 : 1;
}

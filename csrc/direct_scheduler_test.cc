// Unit tests of DirectScheduler.

#include <chrono>
#include <memory>
#include <thread>
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

TEST(DirectSchedulerRunsRequestsInArrivalOrderOnOneInstance) {
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
}

TEST(DirectSchedulerRunsInstancesInParallel) {
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
}

TEST(StopFinishesEveryAcceptedRequestThenRefusesNewOnes) {
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
}

TEST(CreateRefusesAModelWithoutInstances) {
  std::unique_ptr<CompletionQueue> queue;
  CompletionQueue::Create(&queue);
  ModelStats stats;
  std::unique_ptr<DirectScheduler> scheduler;
  Status status = DirectScheduler::Create({}, queue.get(), &stats, &scheduler);
  EXPECT(status.Code() == StatusCode::kInvalidArg);
  EXPECT(scheduler == nullptr);
}

// One instance busy for `busy` with ticket 1, then tickets 2..n queued.
struct BusyDirect {
  std::unique_ptr<CompletionQueue> queue;
  ModelStats stats;
  RecordingRuntime* runtime = nullptr;
  std::unique_ptr<DirectScheduler> scheduler;

  BusyDirect(uint64_t n, std::chrono::milliseconds busy) {
    CompletionQueue::Create(&queue);
    auto owned = std::make_unique<RecordingRuntime>(busy);
    runtime = owned.get();
    std::vector<std::unique_ptr<ModelRuntime>> runtimes;
    runtimes.push_back(std::move(owned));
    DirectScheduler::Create(std::move(runtimes), queue.get(), &stats, &scheduler);
    for (uint64_t i = 1; i <= n; ++i) {
      auto request = MakeRequest(i);
      scheduler->Enqueue(&request);
    }
  }
};

TEST(DirectSchedulerCancelRemovesAQueuedRequestWhichNeverRuns) {
  BusyDirect f(3, std::chrono::milliseconds(200));
  EXPECT(f.scheduler->Cancel(2));
  EXPECT(f.scheduler->InflightCount() == 2);
  auto cancelled = Collect(f.queue.get(), 1);  // at once, before ticket 1 is done
  EXPECT(cancelled.size() == 1 && cancelled[0]->ticket == 2);
  EXPECT(cancelled[0]->status.Code() == StatusCode::kCancelled);
  auto rest = Collect(f.queue.get(), 2);
  EXPECT(rest.size() == 2);
  f.scheduler->Stop();
  EXPECT(f.runtime->executed == std::vector<uint64_t>({1, 3}));
  ModelStatsSnapshot snapshot = f.stats.Snapshot();
  EXPECT(snapshot.cancelled_count == 1);
  EXPECT(snapshot.by_batch_size[1].failed_count == 1);
  EXPECT(snapshot.by_batch_size[1].success_count == 2);
}

TEST(DirectSchedulerCancelOfARunningDoneOrUnknownTicketChangesNothing) {
  BusyDirect f(2, std::chrono::milliseconds(100));
  EXPECT(!f.scheduler->Cancel(99));
  auto done = Collect(f.queue.get(), 1);
  EXPECT(done.size() == 1 && done[0]->ticket == 1);
  EXPECT(!f.scheduler->Cancel(1));  // completed
  EXPECT(Collect(f.queue.get(), 1).size() == 1);
  EXPECT(!f.scheduler->Cancel(2));  // completed
  f.scheduler->Stop();
  EXPECT(f.stats.Snapshot().cancelled_count == 0);
  std::vector<std::unique_ptr<InferRequest>> extra;
  EXPECT(f.queue->Drain(&extra) == 0);  // each request completed once
}

TEST(DirectSchedulerRefusesATicketAlreadyQueued) {
  BusyDirect f(2, std::chrono::milliseconds(100));
  auto twin = MakeRequest(2);
  Status status = f.scheduler->Enqueue(&twin);
  EXPECT(status.Code() == StatusCode::kInvalidArg);
  EXPECT(twin != nullptr);
  EXPECT(Collect(f.queue.get(), 2).size() == 2);
}

TEST(DirectSchedulerStopsWithCancelledRequests) {
  BusyDirect f(5, std::chrono::milliseconds(50));
  EXPECT(f.scheduler->Cancel(3));
  EXPECT(f.scheduler->Cancel(5));
  f.scheduler->Stop();
  std::vector<std::unique_ptr<InferRequest>> out;
  f.queue->Drain(&out);
  EXPECT(out.size() == 5);
  EXPECT(f.runtime->executed == std::vector<uint64_t>({1, 2, 4}));
  EXPECT(f.scheduler->InflightCount() == 0);
}

// A RecordingRuntime that may run on a caller's thread, and notes which thread ran each
// request (never two at once: the scheduler serialises an instance).
class CallerThreadRuntime : public RecordingRuntime {
 public:
  using RecordingRuntime::RecordingRuntime;
  bool MayRunOnCallerThread() const override { return true; }
  void Execute(Batch* batch) override {
    threads.push_back(std::this_thread::get_id());
    RecordingRuntime::Execute(batch);
  }
  std::vector<std::thread::id> threads;
};

constexpr int64_t kOneSecondNs = 1000000000;

std::unique_ptr<DirectScheduler> OneInstance(std::unique_ptr<ModelRuntime> runtime,
                                             CompletionQueue* queue, ModelStats* stats) {
  std::vector<std::unique_ptr<ModelRuntime>> runtimes;
  runtimes.push_back(std::move(runtime));
  std::unique_ptr<DirectScheduler> scheduler;
  DirectScheduler::Create(std::move(runtimes), queue, stats, &scheduler);
  return scheduler;
}

// Runs kInlineWarmup requests through the instance thread; whether all completed.
bool WarmUp(DirectScheduler* scheduler, CompletionQueue* queue) {
  for (uint64_t i = 1; i <= DirectScheduler::kInlineWarmup; ++i) {
    auto request = MakeRequest(1000 + i);
    scheduler->Enqueue(&request);
  }
  return Collect(queue, DirectScheduler::kInlineWarmup).size() ==
         DirectScheduler::kInlineWarmup;
}

TEST(EnqueueOrRunRunsAQuickModelOnTheCallersThreadOnceWarm) {
  std::unique_ptr<CompletionQueue> queue;
  CompletionQueue::Create(&queue);
  ModelStats stats;
  auto runtime = std::make_unique<CallerThreadRuntime>();
  CallerThreadRuntime* raw = runtime.get();
  auto scheduler = OneInstance(std::move(runtime), queue.get(), &stats);
  bool ran_inline = true;
  auto early = MakeRequest(1);
  EXPECT(scheduler->EnqueueOrRun(&early, kOneSecondNs, &ran_inline).IsOk());
  EXPECT(!ran_inline);  // nothing timed yet
  EXPECT(Collect(queue.get(), 1).size() == 1);
  EXPECT(WarmUp(scheduler.get(), queue.get()));
  auto request = MakeRequest(7);
  EXPECT(scheduler->EnqueueOrRun(&request, kOneSecondNs, &ran_inline).IsOk());
  EXPECT(ran_inline);
  EXPECT(request == nullptr);
  std::vector<std::unique_ptr<InferRequest>> out;
  queue->Drain(&out);  // already there: no waiting
  EXPECT(out.size() == 1 && out[0]->ticket == 7 && out[0]->status.IsOk());
  EXPECT(raw->threads.back() == std::this_thread::get_id());
  EXPECT(scheduler->InflightCount() == 0);
  scheduler->Stop();
}

TEST(EnqueueOrRunQueuesForARuntimeThatMustStayOnItsThread) {
  std::unique_ptr<CompletionQueue> queue;
  CompletionQueue::Create(&queue);
  ModelStats stats;
  auto scheduler = OneInstance(std::make_unique<RecordingRuntime>(), queue.get(), &stats);
  EXPECT(WarmUp(scheduler.get(), queue.get()));
  bool ran_inline = true;
  auto request = MakeRequest(7);
  EXPECT(scheduler->EnqueueOrRun(&request, kOneSecondNs, &ran_inline).IsOk());
  EXPECT(!ran_inline);
  EXPECT(Collect(queue.get(), 1).size() == 1);
}

TEST(EnqueueOrRunQueuesForAModelSlowerThanTheLimit) {
  std::unique_ptr<CompletionQueue> queue;
  CompletionQueue::Create(&queue);
  ModelStats stats;
  auto scheduler = OneInstance(
      std::make_unique<CallerThreadRuntime>(std::chrono::milliseconds(1)), queue.get(), &stats);
  EXPECT(WarmUp(scheduler.get(), queue.get()));
  bool ran_inline = true;
  auto request = MakeRequest(7);
  EXPECT(scheduler->EnqueueOrRun(&request, 100000 /* 100 µs */, &ran_inline).IsOk());
  EXPECT(!ran_inline);
  EXPECT(Collect(queue.get(), 1).size() == 1);
}

TEST(EnqueueOrRunQueuesWhileTheInstanceIsBusy) {
  std::unique_ptr<CompletionQueue> queue;
  CompletionQueue::Create(&queue);
  ModelStats stats;
  auto runtime = std::make_unique<CallerThreadRuntime>(std::chrono::milliseconds(5));
  CallerThreadRuntime* raw = runtime.get();
  auto scheduler = OneInstance(std::move(runtime), queue.get(), &stats);
  EXPECT(WarmUp(scheduler.get(), queue.get()));
  auto first = MakeRequest(1);
  scheduler->Enqueue(&first);  // queued or running: either way not idle
  bool ran_inline = true;
  auto second = MakeRequest(2);
  EXPECT(scheduler->EnqueueOrRun(&second, kOneSecondNs, &ran_inline).IsOk());
  EXPECT(!ran_inline);
  auto done = Collect(queue.get(), 2);
  EXPECT(done.size() == 2 && done[0]->ticket == 1 && done[1]->ticket == 2);
  EXPECT(raw->threads.back() != std::this_thread::get_id());
}

TEST(EnqueueOrRunRefusesOnceStopped) {
  std::unique_ptr<CompletionQueue> queue;
  CompletionQueue::Create(&queue);
  ModelStats stats;
  auto scheduler = OneInstance(std::make_unique<CallerThreadRuntime>(), queue.get(), &stats);
  EXPECT(WarmUp(scheduler.get(), queue.get()));
  scheduler->Stop();
  bool ran_inline = true;
  auto late = MakeRequest(9);
  EXPECT(scheduler->EnqueueOrRun(&late, kOneSecondNs, &ran_inline).Code() ==
         StatusCode::kUnavailable);
  EXPECT(late != nullptr && !ran_inline);
}

}  // namespace
}  // namespace pyserver

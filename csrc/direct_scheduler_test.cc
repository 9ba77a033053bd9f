// Unit tests of DirectScheduler.

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

}  // namespace
}  // namespace pyserver

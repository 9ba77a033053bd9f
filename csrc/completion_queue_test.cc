// Unit tests of CompletionQueue.

#include <poll.h>

#include <memory>
#include <thread>
#include <vector>

#include "completion_queue.h"
#include "test_runtimes.h"
#include "unit_test.h"

namespace pyserver {
namespace {

using testing::Collect;
using testing::MakeRequest;

TEST(CompletionQueueSignalsOnlyWhenNonEmpty) {
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
}

TEST(CompletionQueueLosesNothingUnderConcurrentPushes) {
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
}

}  // namespace
}  // namespace pyserver

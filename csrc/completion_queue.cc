#include "completion_queue.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

namespace pyserver {

Status CompletionQueue::Create(std::unique_ptr<CompletionQueue>* queue) {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) {
    return Status(StatusCode::kInternal,
                  std::string("eventfd failed: ") + std::strerror(errno));
  }
  queue->reset(new CompletionQueue(fd));
  return Status::Success();
}

CompletionQueue::~CompletionQueue() { close(fd_); }

void CompletionQueue::Push(std::unique_ptr<InferRequest> request) {
  bool was_empty;
  {
    std::lock_guard<std::mutex> lock(mu_);
    was_empty = ready_.empty();
    ready_.push_back(std::move(request));
  }
  if (was_empty) {
    uint64_t one = 1;
    ssize_t ignored = write(fd_, &one, sizeof(one));
    (void)ignored;  // EAGAIN means the counter is already non-zero.
  }
}

size_t CompletionQueue::Drain(std::vector<std::unique_ptr<InferRequest>>* out) {
  // Clear the counter before taking the list: a Push racing with us then
  // either lands in this drain or re-signals the descriptor.
  uint64_t counter;
  ssize_t ignored = read(fd_, &counter, sizeof(counter));
  (void)ignored;
  std::vector<std::unique_ptr<InferRequest>> taken;
  {
    std::lock_guard<std::mutex> lock(mu_);
    taken.swap(ready_);
  }
  for (auto& request : taken) out->push_back(std::move(request));
  return taken.size();
}

}  // namespace pyserver

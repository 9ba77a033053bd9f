#include "scheduler_threads.h"

namespace pyserver {

void SchedulerThreads::Start(std::function<void()> body) {
  std::lock_guard<std::mutex> lock(join_mu_);
  threads_.emplace_back(std::move(body));
}

void SchedulerThreads::Join() {
  std::lock_guard<std::mutex> lock(join_mu_);
  for (std::thread& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
}

}  // namespace pyserver

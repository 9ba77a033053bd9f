// SchedulerThreads: the threads a scheduler runs its model on (one per
// instance, plus any of its own), started once and joined once.
#pragma once

#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace pyserver {

class SchedulerThreads {
 public:
  SchedulerThreads() = default;
  SchedulerThreads(const SchedulerThreads&) = delete;
  SchedulerThreads& operator=(const SchedulerThreads&) = delete;

  // Starts `body` on a new thread. Call only before the first Join(), from
  // the thread that owns the scheduler.
  void Start(std::function<void()> body);

  // Joins every started thread; blocks until all have exited. Thread safe
  // and idempotent: a concurrent second caller returns once they are joined.
  // The caller must first have told the threads to exit.
  void Join();

 private:
  std::mutex join_mu_;                // serialises Join()
  std::vector<std::thread> threads_;  // guarded by join_mu_ once started
};

}  // namespace pyserver

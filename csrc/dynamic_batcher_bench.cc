// Micro-benchmark of DynamicBatcher: the whole process's CPU time and the
// wall time per request pushed through a batcher by a closed loop that keeps
// a fixed number of requests in flight, so that a chosen number wait in the
// queue behind each batch. The runtime does no work, so the figures are the
// scheduling cost (enqueue, batch formation, hand-over, completion).
//
// Built with the tests (PYSERVER_BUILD_TESTS). With
// PYSERVER_BENCH_PREVIOUS_SOURCES set, a previous implementation (namespace
// pyserver::previous, prepared by `python -m perf batcher`) runs beside it in
// the same process, interleaved, for a same-run comparison.
//
//   dynamic_batcher_bench [requests per run] [repetitions]

#include <poll.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include "completion_queue.h"
#include "dynamic_batcher.h"
#include "host_memory_pool.h"
#include "model_stats.h"
#ifdef PYSERVER_BENCH_PREVIOUS
#include "previous_dynamic_batcher.h"
#endif

namespace pyserver {
namespace {

class NullRuntime : public ModelRuntime {
 public:
  void Execute(Batch* batch) override {
    for (InferRequest* request : batch->requests) request->result = request;
  }
};

struct Scenario {
  const char* name;
  uint32_t waiting;        // requests left in the queue behind each batch
  uint32_t batch;          // max_batch_size = the one preferred size
  uint64_t delay_us;       // max_queue_delay_us
  uint64_t timeout_us;     // default queue timeout; 0 = none
};

struct Figures {
  double cpu_ns_per_request;
  double wall_ns_per_request;
};

uint64_t NowNs(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

template <typename BatcherT, typename ConfigT>
Figures Measure(const Scenario& scenario, uint64_t requests) {
  std::unique_ptr<CompletionQueue> completions;
  CompletionQueue::Create(&completions);
  std::unique_ptr<HostMemoryPool> pool;
  HostMemoryPool::Create(1 << 20, false, &pool);
  ModelStats stats;
  ConfigT config;
  config.max_batch_size = scenario.batch;
  config.preferred_batch_sizes = {scenario.batch};
  config.max_queue_delay_us = scenario.delay_us;
  config.default_queue_policy.default_timeout_us = scenario.timeout_us;
  std::vector<std::unique_ptr<ModelRuntime>> runtimes;
  runtimes.push_back(std::make_unique<NullRuntime>());
  std::unique_ptr<BatcherT> batcher;
  if (!BatcherT::Create(config, std::move(runtimes), pool.get(), completions.get(), &stats,
                        &batcher)
           .IsOk()) {
    std::fprintf(stderr, "Create failed\n");
    std::exit(1);
  }
  const uint64_t window = scenario.waiting + scenario.batch;
  const uint64_t warmup = requests / 10;
  uint64_t next_ticket = 1;  // tickets of waiting requests are distinct
  auto enqueue = [&](std::unique_ptr<InferRequest> request) {
    request->ticket = next_ticket++;
    request->status = Status::Success();
    request->result = nullptr;
    request->deadline_ns = 0;
    if (!batcher->Enqueue(&request).IsOk()) {
      std::fprintf(stderr, "Enqueue refused\n");
      std::exit(1);
    }
  };
  for (uint64_t i = 0; i < window; ++i) enqueue(std::make_unique<InferRequest>());
  std::vector<std::unique_ptr<InferRequest>> done;
  uint64_t completed = 0, cpu_start = 0, wall_start = 0;
  while (completed < warmup + requests) {
    pollfd fd{completions->Fd(), POLLIN, 0};
    poll(&fd, 1, 1000);
    done.clear();
    completions->Drain(&done);
    for (auto& request : done) {
      if (++completed == warmup) {
        cpu_start = NowNs(CLOCK_PROCESS_CPUTIME_ID);
        wall_start = NowNs(CLOCK_MONOTONIC);
      }
      enqueue(std::move(request));
    }
  }
  const uint64_t cpu = NowNs(CLOCK_PROCESS_CPUTIME_ID) - cpu_start;
  const uint64_t wall = NowNs(CLOCK_MONOTONIC) - wall_start;
  batcher->Stop();
  const double n = static_cast<double>(completed - warmup);
  return {cpu / n, wall / n};
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace
}  // namespace pyserver

int main(int argc, char** argv) {
  using namespace pyserver;
  const uint64_t requests = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 200000;
  const int repetitions = argc > 2 ? std::atoi(argv[2]) : 5;
  const Scenario scenarios[] = {
      {"c=1, batch 1, no delay", 0, 1, 0, 0},
      {"batches of 8, 0 waiting", 0, 8, 1'000'000, 0},
      {"batches of 8, 8 waiting", 8, 8, 1'000'000, 0},
      {"batches of 8, 100 waiting", 100, 8, 1'000'000, 0},
      {"batches of 8, 1000 waiting", 1000, 8, 1'000'000, 0},
      {"batches of 8, 10000 waiting", 10000, 8, 1'000'000, 0},
      {"batches of 8, 100 waiting, queue timeout", 100, 8, 1'000'000, 60'000'000},
      {"batches of 8, 1000 waiting, queue timeout", 1000, 8, 1'000'000, 60'000'000},
  };


  std::printf("requests per run: %llu, repetitions: %d (medians; CPU = whole process)\n\n",
              static_cast<unsigned long long>(requests), repetitions);
#ifdef PYSERVER_BENCH_PREVIOUS
  std::printf("| scenario | previous CPU ns/req | new CPU ns/req | new/previous | "
              "previous wall ns/req | new wall ns/req |\n|---|---|---|---|---|---|\n");
#else
  std::printf("| scenario | CPU ns/req | wall ns/req |\n|---|---|---|\n");
#endif
  for (const Scenario& scenario : scenarios) {
    std::vector<double> cpu, wall, previous_cpu, previous_wall;
    for (int r = 0; r < repetitions; ++r) {
#ifdef PYSERVER_BENCH_PREVIOUS
      Figures old = Measure<previous::DynamicBatcher, previous::DynamicBatcherConfig>(
          scenario, requests);
      previous_cpu.push_back(old.cpu_ns_per_request);
      previous_wall.push_back(old.wall_ns_per_request);
#endif
      Figures now = Measure<DynamicBatcher, DynamicBatcherConfig>(scenario, requests);
      cpu.push_back(now.cpu_ns_per_request);
      wall.push_back(now.wall_ns_per_request);
    }
#ifdef PYSERVER_BENCH_PREVIOUS
    std::printf("| %s | %.0f | %.0f | %.2f | %.0f | %.0f |\n", scenario.name, Median(previous_cpu),
                Median(cpu), Median(cpu) / Median(previous_cpu), Median(previous_wall),
                Median(wall));
#else
    std::printf("| %s | %.0f | %.0f |\n", scenario.name, Median(cpu), Median(wall));
#endif
    std::fflush(stdout);
  }
  return 0;
}

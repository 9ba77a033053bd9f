// Unit tests of SequenceBatcher.

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "completion_queue.h"
#include "host_memory_pool.h"
#include "model_stats.h"
#include "sequence_batcher.h"
#include "test_runtimes.h"
#include "unit_test.h"

namespace pyserver {
namespace {

using testing::Collect;

// What the model saw in one batch row.
struct SeenRow {
  uint64_t ticket = 0;
  int32_t start = -1, end = -1, ready = -1;
  uint64_t corrid = 0;
};

// Config: input 0 = VALUE (int32), then START, END, READY (int32 0/1), CORRID
// (uint64) and, with `state`, an int32 state; output 0 = SUM (int32), output 1
// = the state. The runtime adds VALUE to the state (implicit state) and
// answers the sum; it records every batch, and blocks on ticket `gate` until
// Open().
class SequenceRuntime : public ModelRuntime {
 public:
  SequenceRuntime(HostMemoryPool* pool, bool state, uint64_t gate = 0)
      : pool_(pool), state_(state), gate_(gate) {}

  void Execute(Batch* batch) override {
    for (InferRequest* r : batch->requests) {
      if (r->ticket == gate_ && gate_ != 0) {
        std::unique_lock<std::mutex> lock(mu_);
        entered_ = true;
        cv_.notify_all();
        cv_.wait(lock, [this] { return open_; });
      }
    }
    std::vector<SeenRow> seen;
    for (InferRequest* r : batch->requests) {
      SeenRow row;
      row.ticket = r->ticket;
      std::memcpy(&row.start, r->inputs[1].data, 4);
      std::memcpy(&row.end, r->inputs[2].data, 4);
      std::memcpy(&row.ready, r->inputs[3].data, 4);
      std::memcpy(&row.corrid, r->inputs[4].data, 8);
      seen.push_back(row);
      if (!state_) {
        r->result = r;
        continue;
      }
      int32_t value = 0, previous = 0;
      std::memcpy(&value, r->inputs[0].data, 4);
      std::memcpy(&previous, r->inputs[5].data, 4);
      const int32_t sum = previous + value;
      for (uint32_t index : {0u, 1u}) {
        PooledBuffer buffer;
        if (!pool_->Allocate(4, &buffer).IsOk()) return;
        std::memcpy(buffer.Data(), &sum, 4);
        OutputTensor out;
        out.index = index;
        out.type = DataType::kInt32;
        out.shape = {1, 1};
        out.storage = std::make_shared<PooledBuffer>(std::move(buffer));
        out.byte_size = 4;
        r->outputs.push_back(std::move(out));
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    batches.push_back(seen);
  }

  void WaitEntered() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return entered_; });
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  std::vector<std::vector<SeenRow>> Batches() {
    std::lock_guard<std::mutex> lock(mu_);
    return batches;
  }

  std::vector<std::vector<SeenRow>> batches;  // guarded by mu_

 private:
  HostMemoryPool* pool_;
  bool state_;
  uint64_t gate_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool entered_ = false, open_ = false;
};

SequenceBatcherConfig MakeConfig(SequenceStrategy strategy, uint32_t max_batch_size,
                                 bool state) {
  SequenceBatcherConfig config;
  config.model_name = "acc";
  config.strategy = strategy;
  config.max_batch_size = max_batch_size;
  config.input_count = 1;
  const ControlKind kinds[] = {ControlKind::kStart, ControlKind::kEnd, ControlKind::kReady};
  for (uint32_t i = 0; i < 3; ++i) {
    SequenceControl control;
    control.kind = kinds[i];
    control.input_index = 1 + i;
    control.type = DataType::kInt32;
    config.controls.push_back(control);
  }
  SequenceControl corrid;
  corrid.kind = ControlKind::kCorrId;
  corrid.input_index = 4;
  corrid.type = DataType::kUint64;
  config.controls.push_back(corrid);
  if (state) {
    SequenceState s;
    s.input_index = 5;
    s.output_index = 1;
    s.output_name = "STATE_OUT";
    s.type = DataType::kInt32;
    s.dims = {1};
    s.initial.assign(4, 0);
    config.states.push_back(s);
  }
  return config;
}

struct Harness {
  std::unique_ptr<HostMemoryPool> pool;
  std::unique_ptr<CompletionQueue> completions;
  ModelStats stats;
  std::vector<SequenceRuntime*> runtimes;
  std::unique_ptr<SequenceBatcher> batcher;

  Status Start(const SequenceBatcherConfig& config, int instances = 1, bool state = false,
               uint64_t gate = 0) {
    PYSERVER_RETURN_IF_ERROR(HostMemoryPool::Create(1 << 20, false, &pool));
    PYSERVER_RETURN_IF_ERROR(CompletionQueue::Create(&completions));
    std::vector<std::unique_ptr<ModelRuntime>> owned;
    for (int i = 0; i < instances; ++i) {
      auto runtime = std::make_unique<SequenceRuntime>(pool.get(), state, gate);
      runtimes.push_back(runtime.get());
      owned.push_back(std::move(runtime));
    }
    return SequenceBatcher::Create(config, std::move(owned), pool.get(), completions.get(),
                                   &stats, &batcher);
  }

  Status Send(uint64_t ticket, uint64_t id, uint32_t flags, int32_t* value = nullptr) {
    auto r = testing::MakeRequest(ticket);
    r->correlation_id = id;
    r->sequence_flags = flags;
    r->inputs.resize(1);
    if (value != nullptr) {
      r->inputs[0].data = value;
      r->inputs[0].byte_size = 4;
      r->inputs[0].shape = {1, 1};
    }
    return batcher->Enqueue(&r);
  }
};

TEST(DirectPadsIdleRowsBelowTheHighestReadyOne) {
  Harness h;
  EXPECT(h.Start(MakeConfig(SequenceStrategy::kDirect, 4, false)).IsOk());
  EXPECT(h.Send(1, 10, kSequenceStart).IsOk());  // row 0
  EXPECT(Collect(h.completions.get(), 1).size() == 1);
  EXPECT(h.Send(2, 20, kSequenceStart).IsOk());  // row 1
  EXPECT(Collect(h.completions.get(), 1).size() == 1);
  EXPECT(h.Send(3, 20, kSequenceEnd).IsOk());    // row 1 alone: row 0 is padding
  EXPECT(Collect(h.completions.get(), 1).size() == 1);
  auto batches = h.runtimes[0]->Batches();
  EXPECT(batches.size() == 3);
  EXPECT(batches[0].size() == 1 && batches[0][0].start == 1 && batches[0][0].ready == 1 &&
         batches[0][0].corrid == 10);
  EXPECT(batches[1].size() == 2 && batches[1][0].ready == 0 && batches[1][1].corrid == 20 &&
         batches[1][1].start == 1);
  EXPECT(batches[2].size() == 2 && batches[2][0].ready == 0 && batches[2][0].corrid == 0 &&
         batches[2][1].end == 1 && batches[2][1].start == 0 && batches[2][1].ticket == 3);
  EXPECT(h.batcher->ActiveSequenceCount() == 1);  // 10 never ended
}

TEST(RejectsRequestsWithoutIdOrStart) {
  Harness h;
  EXPECT(h.Start(MakeConfig(SequenceStrategy::kDirect, 2, false)).IsOk());
  Status none = h.Send(1, 0, kSequenceStart);
  EXPECT(none.Code() == StatusCode::kInvalidArg);
  EXPECT(none.Message().find("non-zero or non-empty correlation ID") != std::string::npos);
  Status unknown = h.Send(2, 7, 0);
  EXPECT(unknown.Code() == StatusCode::kInvalidArg);
  EXPECT(unknown.Message() == "inference request for sequence 7 to model 'acc' must specify "
                              "the START flag on the first request of the sequence");
  EXPECT(h.Send(3, 7, kSequenceStart | kSequenceEnd).IsOk());
  EXPECT(Collect(h.completions.get(), 1).size() == 1);
  EXPECT(h.Send(4, 7, 0).Code() == StatusCode::kInvalidArg);  // reused after END
  auto batched = testing::MakeRequest(5, 2);
  batched->correlation_id = 8;
  batched->sequence_flags = kSequenceStart;
  EXPECT(h.batcher->Enqueue(&batched).Code() == StatusCode::kInvalidArg);
  EXPECT(h.batcher->InflightCount() == 0);
}

TEST(StringIdIsRejectedByAnIntegerCorrId) {
  Harness h;
  EXPECT(h.Start(MakeConfig(SequenceStrategy::kDirect, 2, false)).IsOk());
  auto r = testing::MakeRequest(1);
  r->correlation_id_is_string = true;
  r->correlation_string = "abc";
  r->sequence_flags = kSequenceStart;
  r->inputs.resize(1);
  Status status = h.batcher->Enqueue(&r);
  EXPECT(status.Code() == StatusCode::kInvalidArg);
  EXPECT(status.Message().find("'abc'") != std::string::npos);
  EXPECT(r != nullptr);  // the caller keeps a refused request
}

TEST(IdleSequenceReleasesItsSlot) {
  Harness h;
  SequenceBatcherConfig config = MakeConfig(SequenceStrategy::kDirect, 1, false);
  config.max_sequence_idle_us = 50000;
  EXPECT(h.Start(config).IsOk());
  EXPECT(h.Send(1, 5, kSequenceStart).IsOk());
  EXPECT(Collect(h.completions.get(), 1).size() == 1);
  EXPECT(h.batcher->ActiveSequenceCount() == 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT(h.batcher->ActiveSequenceCount() == 0);
  EXPECT(h.Send(2, 5, 0).Code() == StatusCode::kInvalidArg);
  EXPECT(h.Send(3, 6, kSequenceStart).IsOk());  // the only slot is free again
  EXPECT(Collect(h.completions.get(), 1).size() == 1);
}

TEST(BacklogWaitsForAFreeSlot) {
  Harness h;
  EXPECT(h.Start(MakeConfig(SequenceStrategy::kDirect, 1, false)).IsOk());  // one slot
  EXPECT(h.Send(1, 1, kSequenceStart).IsOk());
  EXPECT(Collect(h.completions.get(), 1).size() == 1);
  EXPECT(h.Send(2, 2, kSequenceStart).IsOk());
  EXPECT(h.Send(3, 2, kSequenceEnd).IsOk());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT(h.batcher->BacklogCount() == 1);
  EXPECT(h.batcher->InflightCount() == 2);
  EXPECT(h.Send(4, 1, kSequenceEnd).IsOk());  // frees the slot
  auto done = Collect(h.completions.get(), 3);
  EXPECT(done.size() == 3);
  auto batches = h.runtimes[0]->Batches();
  EXPECT(batches.size() == 4 && batches[1][0].ticket == 4 && batches[2][0].ticket == 2 &&
         batches[3][0].ticket == 3 && batches[2][0].corrid == 2);
  EXPECT(h.batcher->BacklogCount() == 0 && h.batcher->ActiveSequenceCount() == 0);
}

TEST(OldestTakesOneRequestPerSequence) {
  Harness h;
  EXPECT(h.Start(MakeConfig(SequenceStrategy::kOldest, 4, false), 1, false, /*gate=*/1).IsOk());
  EXPECT(h.Send(1, 100, kSequenceStart | kSequenceEnd).IsOk());
  h.runtimes[0]->WaitEntered();  // the instance is busy: the rest queue
  EXPECT(h.Send(2, 1, kSequenceStart).IsOk());
  EXPECT(h.Send(3, 1, 0).IsOk());
  EXPECT(h.Send(4, 1, kSequenceEnd).IsOk());
  EXPECT(h.Send(5, 2, kSequenceStart).IsOk());
  EXPECT(h.Send(6, 3, kSequenceStart | kSequenceEnd).IsOk());
  h.runtimes[0]->Open();
  EXPECT(Collect(h.completions.get(), 6).size() == 6);
  auto batches = h.runtimes[0]->Batches();
  EXPECT(batches.size() == 4);
  if (batches.size() == 4) {
    EXPECT(batches[1].size() == 3);  // 2, 5, 6: one per sequence, oldest first
    EXPECT(batches[1][0].ticket == 2 && batches[1][1].ticket == 5 && batches[1][2].ticket == 6);
    EXPECT(batches[2].size() == 1 && batches[2][0].ticket == 3);
    EXPECT(batches[3].size() == 1 && batches[3][0].ticket == 4 && batches[3][0].end == 1);
  }
}

TEST(ImplicitStateFollowsEachSequence) {
  for (SequenceStrategy strategy : {SequenceStrategy::kDirect, SequenceStrategy::kOldest}) {
    Harness h;
    EXPECT(h.Start(MakeConfig(strategy, 2, true), 2, true).IsOk());
    // Three sequences over 2 instances x 2 rows, interleaved.
    std::vector<int32_t> values(30);
    std::map<uint64_t, std::vector<int32_t>> expected;
    std::map<uint64_t, int32_t> sums;
    uint64_t ticket = 1;
    for (int step = 0; step < 10; ++step) {
      for (uint64_t id = 1; id <= 3; ++id) {
        int32_t* value = &values[ticket - 1];
        *value = static_cast<int32_t>(id * 100 + step);
        sums[id] = (step == 0 ? 0 : sums[id]) + *value;
        expected[ticket] = {static_cast<int32_t>(sums[id])};
        uint32_t flags = step == 0 ? kSequenceStart : (step == 9 ? kSequenceEnd : 0);
        EXPECT(h.Send(ticket, id, flags, value).IsOk());
        ++ticket;
      }
    }
    auto done = Collect(h.completions.get(), 30);
    EXPECT(done.size() == 30);
    for (auto& r : done) {
      EXPECT(r->status.IsOk());
      EXPECT(r->outputs.size() == 1);  // the state output is the batcher's
      if (r->outputs.size() == 1) {
        int32_t sum = 0;
        std::memcpy(&sum, r->outputs[0].Data(), 4);
        EXPECT(sum == expected[r->ticket][0]);
      }
    }
    EXPECT(h.batcher->ActiveSequenceCount() == 0);
    // Each sequence stayed on one instance, whatever its rows.
    std::map<uint64_t, std::set<size_t>> instances_of;
    for (size_t i = 0; i < h.runtimes.size(); ++i) {
      for (const auto& batch : h.runtimes[i]->Batches()) {
        for (const SeenRow& row : batch) {
          if (row.ready == 1) instances_of[row.corrid].insert(i);
        }
      }
    }
    EXPECT(instances_of.size() == 3);
    for (const auto& item : instances_of) EXPECT(item.second.size() == 1);
  }
}

TEST(OldestWaitsForItsDelayOrAPreferredSize) {
  for (bool preferred : {false, true}) {
    Harness h;
    SequenceBatcherConfig config = MakeConfig(SequenceStrategy::kOldest, 4, false);
    config.max_queue_delay_us = 300000;
    if (preferred) config.preferred_batch_sizes = {2};
    EXPECT(h.Start(config).IsOk());
    const auto start = std::chrono::steady_clock::now();
    EXPECT(h.Send(1, 1, kSequenceStart).IsOk());
    EXPECT(h.Send(2, 2, kSequenceStart).IsOk());
    EXPECT(Collect(h.completions.get(), 2).size() == 2);
    const auto waited = std::chrono::steady_clock::now() - start;
    auto batches = h.runtimes[0]->Batches();
    EXPECT(batches.size() == 1 && batches[0].size() == 2);  // together either way
    if (preferred) {
      EXPECT(waited < std::chrono::milliseconds(250));  // a preferred size runs at once
    } else {
      EXPECT(waited >= std::chrono::milliseconds(290));  // waited for company
    }
  }
}

TEST(StartOnAnOpenSequenceRestartsItsState) {
  Harness h;
  EXPECT(h.Start(MakeConfig(SequenceStrategy::kDirect, 2, true), 1, true).IsOk());
  int32_t values[] = {5, 6, 7, 8};
  EXPECT(h.Send(1, 9, kSequenceStart, &values[0]).IsOk());
  EXPECT(h.Send(2, 9, 0, &values[1]).IsOk());
  EXPECT(h.Send(3, 9, kSequenceStart, &values[2]).IsOk());  // the old one ends here
  EXPECT(h.Send(4, 9, kSequenceEnd, &values[3]).IsOk());
  auto done = Collect(h.completions.get(), 4);
  EXPECT(done.size() == 4);
  std::map<uint64_t, int32_t> sums;
  for (auto& r : done) {
    if (r->outputs.size() == 1) std::memcpy(&sums[r->ticket], r->outputs[0].Data(), 4);
  }
  EXPECT(sums[1] == 5 && sums[2] == 11 && sums[3] == 7 && sums[4] == 15);
  EXPECT(h.batcher->ActiveSequenceCount() == 0);
}

TEST(CancelTakesBackAWaitingRequestAndMovesItsEnd) {
  Harness h;
  EXPECT(h.Start(MakeConfig(SequenceStrategy::kDirect, 2, false), 1, false, /*gate=*/1).IsOk());
  EXPECT(h.Send(1, 4, kSequenceStart).IsOk());
  h.runtimes[0]->WaitEntered();
  EXPECT(h.Send(2, 4, 0).IsOk());
  EXPECT(h.Send(3, 4, kSequenceEnd).IsOk());
  EXPECT(!h.batcher->Cancel(1));    // running: it completes
  EXPECT(h.batcher->Cancel(3));     // waiting: back, its END to ticket 2
  EXPECT(!h.batcher->Cancel(3));
  EXPECT(!h.batcher->Cancel(999));
  h.runtimes[0]->Open();
  auto done = Collect(h.completions.get(), 3);
  EXPECT(done.size() == 3);
  for (auto& r : done) {
    EXPECT((r->ticket == 3) == (r->status.Code() == StatusCode::kCancelled));
  }
  auto batches = h.runtimes[0]->Batches();
  EXPECT(batches.size() == 2);
  if (batches.size() == 2) EXPECT(batches[1][0].ticket == 2 && batches[1][0].end == 1);
  EXPECT(h.batcher->ActiveSequenceCount() == 0 && h.batcher->InflightCount() == 0);
}

TEST(StopRunsEverythingAccepted) {
  Harness h;
  EXPECT(h.Start(MakeConfig(SequenceStrategy::kDirect, 1, false)).IsOk());
  EXPECT(h.Send(1, 1, kSequenceStart).IsOk());
  EXPECT(h.Send(2, 2, kSequenceStart).IsOk());  // backlog: one slot
  EXPECT(h.Send(3, 2, 0).IsOk());
  h.batcher->Stop();
  EXPECT(h.batcher->InflightCount() == 0);
  EXPECT(Collect(h.completions.get(), 3).size() == 3);
  EXPECT(h.Send(4, 3, kSequenceStart).Code() == StatusCode::kUnavailable);
}

}  // namespace
}  // namespace pyserver

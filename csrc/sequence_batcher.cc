#include "sequence_batcher.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "batch_executor.h"
#include "clock.h"

namespace pyserver {
namespace {

constexpr uint64_t kDefaultIdleUs = 1000000;

bool IsBooleanControlType(DataType type) {
  return type == DataType::kInt32 || type == DataType::kFp32 || type == DataType::kBool;
}

bool IsCorrIdType(DataType type) {
  return type == DataType::kUint64 || type == DataType::kInt64 || type == DataType::kUint32 ||
         type == DataType::kInt32 || type == DataType::kString;
}

const char* ControlName(ControlKind kind) {
  switch (kind) {
    case ControlKind::kStart: return "CONTROL_SEQUENCE_START";
    case ControlKind::kEnd: return "CONTROL_SEQUENCE_END";
    case ControlKind::kReady: return "CONTROL_SEQUENCE_READY";
    case ControlKind::kCorrId: return "CONTROL_SEQUENCE_CORRID";
  }
  return "?";
}

// The map key of a correlation id: numbers and strings never collide.
std::string EncodeKey(const InferRequest& r) {
  if (r.correlation_id_is_string) return "s" + r.correlation_string;
  std::string key(1 + sizeof(uint64_t), 'n');
  std::memcpy(&key[1], &r.correlation_id, sizeof(uint64_t));
  return key;
}

std::string IdText(const InferRequest& r) {
  return r.correlation_id_is_string ? r.correlation_string : std::to_string(r.correlation_id);
}

// Writes a boolean control's value as `type` (kInt32, kFp32 or kBool) into
// `cell`; returns its byte size.
size_t WriteScalar(DataType type, double value, void* cell) {
  switch (type) {
    case DataType::kInt32: {
      const int32_t v = static_cast<int32_t>(value);
      std::memcpy(cell, &v, sizeof(v));
      return sizeof(v);
    }
    case DataType::kFp32: {
      const float v = static_cast<float>(value);
      std::memcpy(cell, &v, sizeof(v));
      return sizeof(v);
    }
    default: {
      const uint8_t v = value != 0 ? 1 : 0;
      std::memcpy(cell, &v, sizeof(v));
      return sizeof(v);
    }
  }
}

}  // namespace

Status SequenceBatcher::Create(const SequenceBatcherConfig& config,
                               std::vector<std::unique_ptr<ModelRuntime>> runtimes,
                               HostMemoryPool* pool, CompletionQueue* completions,
                               ModelStats* stats, std::unique_ptr<SequenceBatcher>* batcher) {
  if (runtimes.empty()) {
    return Status(StatusCode::kInvalidArg, "a model needs at least one instance");
  }
  const uint32_t total_inputs =
      config.input_count + static_cast<uint32_t>(config.controls.size() + config.states.size());
  std::vector<bool> taken(total_inputs, false);
  std::vector<bool> kinds(4, false);
  for (const SequenceControl& control : config.controls) {
    const int kind = static_cast<int>(control.kind);
    if (kinds[kind]) {
      return Status(StatusCode::kInvalidArg, std::string("sequence batching specifies multiple ") +
                                                 ControlName(control.kind) + " tensors");
    }
    kinds[kind] = true;
    if (control.input_index < config.input_count || control.input_index >= total_inputs ||
        taken[control.input_index]) {
      return Status(StatusCode::kInvalidArg, "control input positions must follow the inputs");
    }
    taken[control.input_index] = true;
    const bool type_ok = control.kind == ControlKind::kCorrId ? IsCorrIdType(control.type)
                                                              : IsBooleanControlType(control.type);
    if (!type_ok) {
      return Status(StatusCode::kInvalidArg,
                    std::string("unsupported data type for ") + ControlName(control.kind));
    }
  }
  for (const SequenceState& state : config.states) {
    if (state.input_index < config.input_count || state.input_index >= total_inputs ||
        taken[state.input_index]) {
      return Status(StatusCode::kInvalidArg, "state input positions must follow the inputs");
    }
    taken[state.input_index] = true;
    uint64_t elements = 0;
    for (int64_t dim : state.dims) {
      if (dim < 0) {
        return Status(StatusCode::kInvalidArg,
                      "state '" + state.output_name + "' needs fixed dims");
      }
    }
    PYSERVER_RETURN_IF_ERROR(ElementCount(state.dims, &elements));
    if (state.type == DataType::kString || ElementByteSize(state.type) == 0 ||
        state.initial.size() != elements * ElementByteSize(state.type)) {
      return Status(StatusCode::kInvalidArg,
                    "state '" + state.output_name + "' needs a fixed-size type and an initial "
                    "value of its byte size");
    }
  }
  const uint32_t rows = std::max<uint32_t>(config.max_batch_size, 1);
  for (uint32_t size : config.preferred_batch_sizes) {
    if (size < 1 || size > rows) {
      return Status(StatusCode::kInvalidArg, "preferred batch size " + std::to_string(size) +
                                                 " must be between 1 and max_batch_size");
    }
  }
  std::unique_ptr<SequenceBatcher> created(
      new SequenceBatcher(config, std::move(runtimes), pool, completions, stats));
  SequenceBatcher* self = created.get();
  for (auto& instance : created->instances_) {
    Instance* raw = instance.get();
    created->threads_.Start([self, raw] { self->InstanceLoop(raw); });
  }
  created->threads_.Start([self] { self->ReaperLoop(); });
  *batcher = std::move(created);
  return Status::Success();
}

SequenceBatcher::SequenceBatcher(const SequenceBatcherConfig& config,
                                 std::vector<std::unique_ptr<ModelRuntime>> runtimes,
                                 HostMemoryPool* pool, CompletionQueue* completions,
                                 ModelStats* stats)
    : config_([&config] {
        SequenceBatcherConfig c = config;
        if (c.max_sequence_idle_us == 0) c.max_sequence_idle_us = kDefaultIdleUs;
        return c;
      }()),
      rows_(std::max<uint32_t>(config.max_batch_size, 1)),
      runtimes_(std::move(runtimes)),
      pool_(pool),
      completions_(completions),
      stats_(stats) {
  for (size_t i = 0; i < config_.controls.size(); ++i) {
    if (config_.controls[i].kind == ControlKind::kCorrId) corrid_control_ = static_cast<int>(i);
  }
  const size_t controls = config_.controls.size();
  for (size_t i = 0; i < runtimes_.size(); ++i) {
    auto instance = std::make_unique<Instance>();
    instance->index = static_cast<uint32_t>(i);
    instance->runtime = runtimes_[i].get();
    instance->padding.resize(rows_);
    instance->control_bytes.assign(rows_ * controls, 0);
    instance->corrid_strings.resize(rows_ * controls);
    instances_.push_back(std::move(instance));
  }
  // Slot s belongs to instance s % instances (both strategies).
  size_t per_instance = rows_;
  if (config_.strategy == SequenceStrategy::kOldest && config_.max_candidate_sequences > 0) {
    per_instance = config_.max_candidate_sequences;
  }
  const size_t slot_count = runtimes_.size() * per_instance;
  slots_.assign(slot_count, nullptr);
  for (uint32_t s = 0; s < slot_count; ++s) free_slots_.insert(s);
}

SequenceBatcher::~SequenceBatcher() { Stop(); }

Status SequenceBatcher::Enqueue(std::unique_ptr<InferRequest>* request) {
  InferRequest* r = request->get();
  const std::string& model = config_.model_name;
  if (r->batch_size != 1) {
    return Status(StatusCode::kInvalidArg,
                  "inference request to model '" + model +
                      "' must specify batch-size 1 due to requirements of sequence batcher");
  }
  if (r->correlation_id_is_string ? r->correlation_string.empty() : r->correlation_id == 0) {
    return Status(StatusCode::kInvalidArg, "inference request to model '" + model +
                                               "' must specify a non-zero or non-empty "
                                               "correlation ID");
  }
  if (corrid_control_ >= 0 && r->correlation_id_is_string &&
      config_.controls[corrid_control_].type != DataType::kString) {
    return Status(StatusCode::kInvalidArg,
                  "inference request to model '" + model + "' gives the string correlation ID '" +
                      r->correlation_string +
                      "' but the model's CONTROL_SEQUENCE_CORRID input takes an integer "
                      "correlation ID");
  }
  const bool start = (r->sequence_flags & kSequenceStart) != 0;
  const bool end = (r->sequence_flags & kSequenceEnd) != 0;
  std::string key = EncodeKey(*r);
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return Status(StatusCode::kUnavailable, "model is being unloaded");
  auto found = mapped_.find(key);
  if (found == mapped_.end() && !start) {
    return Status(StatusCode::kInvalidArg,
                  "inference request for sequence " + IdText(*r) + " to model '" + model +
                      "' must specify the START flag on the first request of the sequence");
  }
  Sequence* sequence = nullptr;
  if (found != mapped_.end()) {
    // START on a live id ends the previous sequence there: the new one
    // follows its queued requests in the same slot, from the initial state.
    sequence = found->second;
  } else {
    sequences_.emplace_back();
    sequence = &sequences_.back();
    sequence->self = std::prev(sequences_.end());
    sequence->key = key;
    sequence->numeric_id = r->correlation_id;
    sequence->string_id = r->correlation_id_is_string ? r->correlation_string
                                                      : std::to_string(r->correlation_id);
    sequence->idle = idle_.end();
    mapped_.emplace(std::move(key), sequence);
    if (!free_slots_.empty()) {
      AssignSlotLocked(sequence, *free_slots_.begin());
    } else {
      backlog_.push_back(sequence);
    }
  }
  r->enqueued_ns = MonotonicNs();
  r->deadline_ns = 0;
  MarkBusyLocked(sequence);
  waiting_[r->ticket] = sequence;
  sequence->queue.push_back(std::move(*request));
  if (end) {
    mapped_.erase(sequence->key);
    sequence->mapped = false;
  }
  inflight_.fetch_add(1);
  if (sequence->slot >= 0 && !sequence->running && sequence->queue.size() == 1) {
    WakeForLocked(sequence);
  }
  return Status::Success();
}

bool SequenceBatcher::Cancel(uint64_t ticket) {
  std::vector<RequestPtr> cancelled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto found = waiting_.find(ticket);
    if (found == waiting_.end()) return false;
    Sequence* sequence = found->second;
    waiting_.erase(found);
    auto it = std::find_if(sequence->queue.begin(), sequence->queue.end(),
                           [ticket](const RequestPtr& r) { return r->ticket == ticket; });
    if (it == sequence->queue.end()) return false;  // not reached: waiting_ tracks the queues
    const size_t position = static_cast<size_t>(it - sequence->queue.begin());
    const uint32_t flags = (*it)->sequence_flags;
    cancelled.push_back(std::move(*it));
    sequence->queue.erase(it);
    if ((flags & kSequenceStart) && position < sequence->queue.size()) {
      sequence->queue[position]->sequence_flags |= kSequenceStart;
    }
    const bool previous_waits = position > 1 || (position == 1 && !sequence->running);
    if ((flags & kSequenceEnd) && previous_waits) {
      sequence->queue[position - 1]->sequence_flags |= kSequenceEnd;
    }
    if (!sequence->running && sequence->queue.empty()) SettleLocked(sequence, MonotonicNs());
    ExitIfDrainedLocked();
  }
  InferRequest* r = cancelled.front().get();
  r->status = Status(StatusCode::kCancelled, "request cancelled while queued");
  r->compute_start_ns = r->compute_end_ns = MonotonicNs();
  Complete(&cancelled);
  return true;
}

void SequenceBatcher::Stop() {
  std::unique_lock<std::mutex> lock(mu_);
  if (!stopping_) {
    stopping_ = true;
    std::vector<Sequence*> settled;
    for (Sequence& sequence : sequences_) {
      if (!sequence.running && sequence.queue.empty()) settled.push_back(&sequence);
    }
    for (Sequence* sequence : settled) ReleaseLocked(sequence);
    if (DrainedLocked()) exit_ = true;
  }
  for (auto& instance : instances_) instance->ready.notify_all();
  reaper_cv_.notify_all();
  lock.unlock();
  threads_.Join();
}

size_t SequenceBatcher::ActiveSequenceCount() {
  std::lock_guard<std::mutex> lock(mu_);
  return mapped_.size();
}

size_t SequenceBatcher::BacklogCount() {
  std::lock_guard<std::mutex> lock(mu_);
  return backlog_.size();
}

void SequenceBatcher::AssignSlotLocked(Sequence* sequence, uint32_t slot) {
  free_slots_.erase(slot);
  slots_[slot] = sequence;
  sequence->slot = slot;
}

void SequenceBatcher::WakeForLocked(const Sequence* sequence) {
  Instance* owner = instances_[static_cast<size_t>(sequence->slot) % instances_.size()].get();
  if (owner->waiting) owner->ready.notify_one();
}

void SequenceBatcher::MarkBusyLocked(Sequence* sequence) {
  if (sequence->idle != idle_.end()) {
    idle_.erase(sequence->idle);
    sequence->idle = idle_.end();
  }
}

void SequenceBatcher::SettleLocked(Sequence* sequence, uint64_t now) {
  if (!sequence->mapped || stopping_) {
    ReleaseLocked(sequence);
    return;
  }
  const bool was_empty = idle_.empty();
  // Deadlines are now + a constant: each new one is the latest.
  sequence->idle = idle_.emplace_hint(idle_.end(), now + config_.max_sequence_idle_us * 1000,
                                      sequence);
  if (was_empty) reaper_cv_.notify_one();
}

void SequenceBatcher::ReleaseLocked(Sequence* sequence) {
  MarkBusyLocked(sequence);
  if (sequence->mapped) {
    mapped_.erase(sequence->key);
    sequence->mapped = false;
  }
  if (sequence->slot >= 0) {
    const uint32_t slot = static_cast<uint32_t>(sequence->slot);
    slots_[slot] = nullptr;
    if (!backlog_.empty()) {
      Sequence* next = backlog_.front();
      backlog_.pop_front();
      slots_[slot] = next;
      next->slot = slot;
      WakeForLocked(next);
    } else {
      free_slots_.insert(slot);
    }
  } else {
    backlog_.erase(std::remove(backlog_.begin(), backlog_.end(), sequence), backlog_.end());
  }
  sequences_.erase(sequence->self);
}

bool SequenceBatcher::DrainedLocked() const { return sequences_.empty(); }

void SequenceBatcher::ExitIfDrainedLocked() {
  if (!stopping_ || !DrainedLocked() || exit_) return;
  exit_ = true;
  for (auto& instance : instances_) instance->ready.notify_all();
  reaper_cv_.notify_all();
}

void SequenceBatcher::FormBatchLocked(Instance* instance, uint64_t now, std::vector<Row>* rows,
                                      uint64_t* wake_ns) {
  *wake_ns = 0;
  if (config_.strategy == SequenceStrategy::kDirect) {
    FormDirectLocked(instance, rows);
  } else {
    FormOldestLocked(instance, now, rows, wake_ns);
  }
  for (Row& row : *rows) {
    if (row.sequence == nullptr) continue;
    row.sequence->running = true;
    waiting_.erase(row.request->ticket);
  }
}

void SequenceBatcher::FormDirectLocked(Instance* instance, std::vector<Row>* rows) {
  const size_t count = instances_.size();
  int highest = -1;
  for (uint32_t row = 0; row < rows_; ++row) {
    if (RunnableLocked(slots_[row * count + instance->index])) highest = static_cast<int>(row);
  }
  for (int row = 0; row <= highest; ++row) {
    Sequence* sequence = slots_[row * count + instance->index];
    if (RunnableLocked(sequence)) {
      rows->push_back({sequence, sequence->queue.front().get()});
    } else {
      rows->push_back({nullptr, &instance->padding[row]});
    }
  }
}

void SequenceBatcher::FormOldestLocked(Instance* instance, uint64_t now, std::vector<Row>* rows,
                                       uint64_t* wake_ns) {
  std::vector<std::pair<uint64_t, Sequence*>> runnable;
  for (size_t s = instance->index; s < slots_.size(); s += instances_.size()) {
    Sequence* sequence = slots_[s];
    if (RunnableLocked(sequence)) {
      runnable.emplace_back(sequence->queue.front()->enqueued_ns, sequence);
    }
  }
  if (runnable.empty()) return;
  size_t take = std::min<size_t>(runnable.size(), rows_);
  std::partial_sort(runnable.begin(), runnable.begin() + take, runnable.end());
  const uint64_t delay_ns = config_.max_queue_delay_us * 1000;
  const uint64_t oldest = runnable.front().first;
  bool ready = take == rows_ || delay_ns == 0 || stopping_ || now - oldest >= delay_ns;
  if (!ready && !config_.preferred_batch_sizes.empty()) {
    for (uint32_t size : config_.preferred_batch_sizes) {
      if (size <= take) {
        ready = true;
        if (size == take) break;
      }
    }
    if (ready) {
      // The largest preferred size that the runnable requests fill.
      size_t best = 0;
      for (uint32_t size : config_.preferred_batch_sizes) {
        if (size <= take) best = std::max<size_t>(best, size);
      }
      take = best;
    }
  }
  if (!ready) {
    *wake_ns = oldest + delay_ns;
    return;
  }
  for (size_t i = 0; i < take; ++i) {
    Sequence* sequence = runnable[i].second;
    rows->push_back({sequence, sequence->queue.front().get()});
  }
}

void SequenceBatcher::BindRowsLocked(Instance* instance, const std::vector<Row>& rows) {
  const size_t controls = config_.controls.size();
  const size_t total = config_.input_count + controls + config_.states.size();
  const bool batching = config_.max_batch_size > 0;
  const InferRequest* first = nullptr;
  for (const Row& row : rows) {
    if (row.sequence != nullptr) {
      first = row.request;
      break;
    }
  }
  // Real rows first: padding copies the first real row's inputs and outputs.
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t k = 0; k < rows.size(); ++k) {
      const Row& row = rows[k];
      const bool padding = row.sequence == nullptr;
      if (padding != (pass == 1)) continue;
      InferRequest* r = row.request;
      if (padding) {
        r->inputs.assign(first->inputs.begin(), first->inputs.begin() + config_.input_count);
        r->requested_outputs = first->requested_outputs;
        r->batch_size = 1;
        r->status = Status::Success();
        r->outputs.clear();
        r->sequence_flags = 0;
      }
      r->inputs.resize(total);
      for (size_t c = 0; c < controls; ++c) {
        const SequenceControl& control = config_.controls[c];
        InputRef& ref = r->inputs[control.input_index];
        ref.shape = batching ? std::vector<int64_t>{1, 1} : std::vector<int64_t>{1};
        void* cell = &instance->control_bytes[k * controls + c];
        bool on = false;
        switch (control.kind) {
          case ControlKind::kStart: on = !padding && (r->sequence_flags & kSequenceStart); break;
          case ControlKind::kEnd: on = !padding && (r->sequence_flags & kSequenceEnd); break;
          case ControlKind::kReady: on = !padding; break;
          case ControlKind::kCorrId: break;
        }
        if (control.kind != ControlKind::kCorrId) {
          ref.byte_size = WriteScalar(control.type, on ? control.true_value : control.false_value,
                                      cell);
          ref.data = cell;
        } else if (control.type == DataType::kString) {
          std::string& text = instance->corrid_strings[k * controls + c];
          const std::string id = padding ? std::string() : row.sequence->string_id;
          const uint32_t length = static_cast<uint32_t>(id.size());
          text.assign(reinterpret_cast<const char*>(&length), sizeof(length));
          text += id;
          ref.data = text.data();
          ref.byte_size = text.size();
        } else {
          const uint64_t id = padding ? 0 : row.sequence->numeric_id;
          switch (control.type) {
            case DataType::kUint64:
            case DataType::kInt64:
              std::memcpy(cell, &id, sizeof(id));
              ref.byte_size = sizeof(id);
              break;
            default: {
              const uint32_t low = static_cast<uint32_t>(id);
              std::memcpy(cell, &low, sizeof(low));
              ref.byte_size = sizeof(low);
            }
          }
          ref.data = cell;
        }
      }
      const bool fresh = padding || (r->sequence_flags & kSequenceStart) != 0 ||
                         row.sequence->state.empty();
      for (size_t s = 0; s < config_.states.size(); ++s) {
        const SequenceState& state = config_.states[s];
        InputRef& ref = r->inputs[state.input_index];
        ref.shape.clear();
        if (batching) ref.shape.push_back(1);
        ref.shape.insert(ref.shape.end(), state.dims.begin(), state.dims.end());
        if (fresh) {
          ref.data = state.initial.data();
          ref.byte_size = state.initial.size();
        } else {
          ref.data = row.sequence->state[s].Data();
          ref.byte_size = row.sequence->state[s].byte_size;
        }
        // The state output comes back whatever the client asked for.
        std::vector<uint32_t>& wanted = r->requested_outputs;
        if (!padding && !wanted.empty()) {
          auto at = std::lower_bound(wanted.begin(), wanted.end(), state.output_index);
          if (at == wanted.end() || *at != state.output_index) {
            wanted.insert(at, state.output_index);
          }
        }
      }
    }
  }
}

void SequenceBatcher::FinishRowsLocked(const std::vector<Row>& rows, uint64_t now,
                                       std::vector<RequestPtr>* done) {
  for (const Row& row : rows) {
    if (row.sequence == nullptr) {
      row.request->outputs.clear();  // padding: drop its results
      row.request->inputs.clear();
      continue;
    }
    Sequence* sequence = row.sequence;
    InferRequest* r = row.request;
    if (!config_.states.empty()) {
      std::vector<OutputTensor> next(config_.states.size());
      bool complete = true;
      for (size_t s = 0; s < config_.states.size(); ++s) {
        const SequenceState& state = config_.states[s];
        auto it = std::find_if(r->outputs.begin(), r->outputs.end(),
                               [&state](const OutputTensor& t) {
                                 return t.index == state.output_index;
                               });
        if (it == r->outputs.end()) {
          complete = false;
          continue;
        }
        if (it->byte_size != state.initial.size()) {
          complete = false;
          if (r->status.IsOk()) {
            r->status = Status(StatusCode::kInternal,
                               "the model's output state '" + state.output_name + "' has " +
                                   std::to_string(it->byte_size) + " bytes, expected " +
                                   std::to_string(state.initial.size()));
          }
        }
        next[s] = std::move(*it);
        r->outputs.erase(it);
      }
      if (r->status.IsOk() && !complete) {
        r->status = Status(StatusCode::kInternal, "the model produced no output state");
      }
      if (r->status.IsOk()) sequence->state = std::move(next);
    }
    done->push_back(std::move(sequence->queue.front()));
    sequence->queue.pop_front();
    sequence->running = false;
    if (!sequence->queue.empty()) {
      WakeForLocked(sequence);
    } else {
      SettleLocked(sequence, now);
    }
  }
  ExitIfDrainedLocked();
}

void SequenceBatcher::InstanceLoop(Instance* instance) {
  std::vector<Row> rows;
  std::vector<RequestPtr> done;
  Batch batch;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      while (true) {
        if (exit_) return;
        const uint64_t now = MonotonicNs();
        uint64_t wake_ns = 0;
        FormBatchLocked(instance, now, &rows, &wake_ns);
        if (!rows.empty()) break;
        instance->waiting = true;
        if (wake_ns == 0) {
          instance->ready.wait(lock);
        } else if (wake_ns > now) {
          instance->ready.wait_for(lock, std::chrono::nanoseconds(wake_ns - now));
        }
        instance->waiting = false;
      }
      BindRowsLocked(instance, rows);
    }
    batch.requests.clear();
    for (const Row& row : rows) batch.requests.push_back(row.request);
    batch.total_batch_size = static_cast<uint32_t>(rows.size());
    ExecuteBatch(instance->runtime, pool_, &batch);
    batch.requests.clear();
    // The execution is credited to a real request, never to padding.
    bool moved = false;
    for (const Row& row : rows) {
      if (row.sequence == nullptr && row.request->counts_execution) {
        row.request->counts_execution = false;
        moved = true;
      }
    }
    for (const Row& row : rows) {
      if (moved && row.sequence != nullptr && row.request->status.IsOk()) {
        row.request->counts_execution = true;
        break;
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      FinishRowsLocked(rows, MonotonicNs(), &done);
    }
    rows.clear();
    Complete(&done);
  }
}

void SequenceBatcher::ReaperLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!exit_) {
    const uint64_t now = MonotonicNs();
    while (!idle_.empty() && idle_.begin()->first <= now) ReleaseLocked(idle_.begin()->second);
    if (idle_.empty()) {
      reaper_cv_.wait(lock);
    } else {
      reaper_cv_.wait_for(lock, std::chrono::nanoseconds(idle_.begin()->first - now));
    }
  }
}

void SequenceBatcher::Complete(std::vector<RequestPtr>* done) {
  for (RequestPtr& r : *done) {
    stats_->RecordCompleted(*r);
    inflight_.fetch_sub(1);
    completions_->Push(std::move(r));
  }
  done->clear();
}

}  // namespace pyserver

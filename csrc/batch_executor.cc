#include "batch_executor.h"

#include <cstring>

#include "clock.h"

namespace pyserver {
namespace {

// Fills batch->gathered: one buffer per input that every request can copy.
Status Gather(HostMemoryPool* pool, Batch* batch) {
  const auto& requests = batch->requests;
  const size_t input_count = requests[0]->inputs.size();
  batch->gathered.clear();
  batch->gathered.resize(input_count);
  for (size_t i = 0; i < input_count; ++i) {
    size_t total = 0;
    bool copyable = true;
    for (const InferRequest* request : requests) {
      if (request->inputs.size() != input_count || request->inputs[i].data == nullptr) {
        copyable = false;
        break;
      }
      total += request->inputs[i].byte_size;
    }
    if (!copyable) continue;
    PYSERVER_RETURN_IF_ERROR(pool->Allocate(total, &batch->gathered[i]));
    char* out = static_cast<char*>(batch->gathered[i].Data());
    for (const InferRequest* request : requests) {
      std::memcpy(out, request->inputs[i].data, request->inputs[i].byte_size);
      out += request->inputs[i].byte_size;
    }
  }
  return Status::Success();
}

}  // namespace

void ExecuteBatch(ModelRuntime* runtime, HostMemoryPool* pool, Batch* batch) {
  const uint64_t start = MonotonicNs();
  for (InferRequest* request : batch->requests) request->compute_start_ns = start;
  Status gathered = Status::Success();
  if (batch->requests.size() > 1 && pool != nullptr && runtime->WantsGatheredInputs()) {
    gathered = Gather(pool, batch);
  }
  if (gathered.IsOk()) {
    runtime->Execute(batch);
  } else {
    for (InferRequest* request : batch->requests) request->status = gathered;
  }
  batch->gathered.clear();
  const uint64_t end = MonotonicNs();
  bool credited = false;
  for (InferRequest* request : batch->requests) {
    request->compute_end_ns = end;
    if (request->status.IsOk() && request->result == nullptr && request->outputs.empty()) {
      request->status = Status(StatusCode::kInternal, "the backend produced no result");
    }
    request->counts_execution = !credited && request->status.IsOk();
    credited = credited || request->counts_execution;
  }
}

}  // namespace pyserver

#include "native_runtime.h"

#include <algorithm>
#include <string>

namespace pyserver {
namespace {

// The config outputs any request of the batch asked for, ascending. A request
// that names none asked for every output.
std::vector<uint32_t> WantedOutputs(const std::vector<InferRequest*>& requests,
                                    size_t output_count) {
  std::vector<bool> wanted(output_count, false);
  for (const InferRequest* request : requests) {
    if (request->requested_outputs.empty()) {
      std::fill(wanted.begin(), wanted.end(), true);
      break;
    }
    for (uint32_t index : request->requested_outputs) {
      if (index < output_count) wanted[index] = true;
    }
  }
  std::vector<uint32_t> out;
  for (uint32_t i = 0; i < output_count; ++i) {
    if (wanted[i]) out.push_back(i);
  }
  return out;
}

// Bytes of the first `rows` rows of `tensor` from byte `offset` on: rows of
// kString tensors are walked element by element, others are fixed size.
Status RowsByteSize(const OutputTensor& tensor, size_t offset, uint32_t rows,
                    size_t* byte_size) {
  uint64_t elements = 0;
  PYSERVER_RETURN_IF_ERROR(ElementCount(tensor.shape, &elements));
  const uint64_t total_rows = tensor.shape.empty() ? 1 : static_cast<uint64_t>(tensor.shape[0]);
  const uint64_t per_row = total_rows == 0 ? 0 : elements / total_rows;
  if (tensor.type != DataType::kString) {
    *byte_size = static_cast<size_t>(per_row * rows * ElementByteSize(tensor.type));
    return Status::Success();
  }
  return StringElementsByteSize(static_cast<const char*>(tensor.Data()) + offset,
                                tensor.byte_size - offset, per_row * rows, byte_size);
}

}  // namespace

void NativeRuntime::Execute(Batch* batch) {
  const std::vector<InferRequest*>& requests = batch->requests;
  const size_t input_count = config_.inputs.size();
  const std::vector<uint32_t> wanted = WantedOutputs(requests, config_.outputs.size());

  // One request: its own bytes. Several: the scheduler's gathered buffers,
  // with the batch dimension summed.
  std::vector<TensorView> inputs(input_count);
  const InferRequest& first = *requests[0];
  for (size_t i = 0; i < input_count; ++i) {
    if (i >= first.inputs.size()) {
      for (InferRequest* request : requests) {
        request->status = Status(StatusCode::kInvalidArg,
                                 "input '" + config_.inputs[i].name + "' is missing");
      }
      return;
    }
    TensorView& view = inputs[i];
    view.type = config_.inputs[i].type;
    view.shape = first.inputs[i].shape;
    if (requests.size() == 1) {
      view.data = first.inputs[i].data;
      view.byte_size = first.inputs[i].byte_size;
    } else {
      if (i >= batch->gathered.size() || batch->gathered[i].Data() == nullptr) {
        for (InferRequest* request : requests) {
          request->status = Status(StatusCode::kInternal, "input '" + config_.inputs[i].name +
                                                              "' was not gathered for the batch");
        }
        return;
      }
      view.data = batch->gathered[i].Data();
      view.byte_size = batch->gathered[i].Size();
      if (!view.shape.empty()) view.shape[0] = batch->total_batch_size;
    }
  }

  std::vector<OutputTensor> outputs;
  Status status = Run(batch->total_batch_size, inputs, wanted, &outputs);
  if (status.IsOk() && outputs.size() != wanted.size()) {
    status = Status(StatusCode::kInternal,
                    "the runtime produced " + std::to_string(outputs.size()) + " outputs for " +
                        std::to_string(wanted.size()) + " requested");
  }
  if (status.IsOk() && requests.size() > 1) {
    for (const OutputTensor& output : outputs) {
      if (output.shape.empty() || output.shape[0] != batch->total_batch_size) {
        status = Status(StatusCode::kInternal,
                        "output '" + config_.outputs[output.index].name +
                            "' does not have the batch dimension first");
        break;
      }
    }
  }
  if (!status.IsOk()) {
    if (requests.size() > 1 && config_.retry_failed_batch_per_request) {
      // Find out which requests made the batch fail: each runs alone.
      Batch alone;
      alone.requests.resize(1);
      for (InferRequest* request : requests) {
        alone.requests[0] = request;
        alone.total_batch_size = request->batch_size;
        Execute(&alone);
      }
      return;
    }
    for (InferRequest* request : requests) request->status = status;
    return;
  }

  // Scatter: each request gets views of its rows of the outputs it asked for.
  std::vector<size_t> offsets(outputs.size(), 0);
  for (InferRequest* request : requests) {
    request->outputs.clear();
    const bool all = request->requested_outputs.empty();
    size_t next_asked = 0;
    for (size_t k = 0; k < outputs.size(); ++k) {
      const OutputTensor& whole = outputs[k];
      const bool asked = all || (next_asked < request->requested_outputs.size() &&
                                 request->requested_outputs[next_asked] == whole.index);
      size_t byte_size = whole.byte_size;
      if (requests.size() > 1) {
        Status sized = RowsByteSize(whole, offsets[k], request->batch_size, &byte_size);
        if (!sized.IsOk()) {
          request->status = Status(StatusCode::kInternal, sized.Message());
          break;
        }
      }
      if (asked) {
        if (!all) ++next_asked;
        OutputTensor part;
        part.index = whole.index;
        part.type = whole.type;
        part.shape = whole.shape;
        if (requests.size() > 1) part.shape[0] = request->batch_size;
        part.storage = whole.storage;
        part.offset = whole.offset + offsets[k];
        part.byte_size = byte_size;
        request->outputs.push_back(std::move(part));
      }
      offsets[k] += byte_size;
    }
  }
}

}  // namespace pyserver

// Tests of NativeRuntime::Execute: inputs handed to Run(), outputs scattered
// to the requests of a batch without copies, and the failed-batch policy.

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "batch_executor.h"
#include "host_memory_pool.h"
#include "native_runtime.h"
#include "unit_test.h"

namespace pyserver {
namespace {

// Input X (FP32, dims [2]); output 0 "DOUBLE" = 2 * X (FP32), output 1
// "NAME" (kString) = one string per row, "row<first value>". Fails the whole
// run when any value is negative. Counts its runs.
class DoublingRuntime : public NativeRuntime {
 public:
  DoublingRuntime(NativeRuntimeConfig config, HostMemoryPool* pool)
      : NativeRuntime(std::move(config), pool) {}

  int runs = 0;
  std::vector<uint32_t> last_wanted;

 protected:
  Status Run(uint32_t batch_size, const std::vector<TensorView>& inputs,
             const std::vector<uint32_t>& wanted, std::vector<OutputTensor>* outputs) override {
    ++runs;
    last_wanted = wanted;
    const TensorView& x = inputs[0];
    const float* values = static_cast<const float*>(x.data);
    const size_t count = x.byte_size / sizeof(float);
    if (x.shape.size() != 2 || x.shape[0] != batch_size || count != batch_size * 2u) {
      return Status(StatusCode::kInternal, "unexpected input shape");
    }
    for (size_t i = 0; i < count; ++i) {
      if (values[i] < 0) return Status(StatusCode::kInvalidArg, "negative input");
    }
    for (uint32_t index : wanted) {
      OutputTensor out;
      out.index = index;
      out.storage = std::make_shared<PooledBuffer>();
      if (index == 0) {
        out.type = DataType::kFp32;
        out.shape = {static_cast<int64_t>(batch_size), 2};
        PYSERVER_RETURN_IF_ERROR(pool()->Allocate(count * sizeof(float), out.storage.get()));
        float* dst = static_cast<float*>(out.storage->Data());
        for (size_t i = 0; i < count; ++i) dst[i] = 2 * values[i];
        out.byte_size = count * sizeof(float);
      } else {
        out.type = DataType::kString;
        out.shape = {static_cast<int64_t>(batch_size), 1};
        std::string bytes;
        for (uint32_t row = 0; row < batch_size; ++row) {
          const std::string text = "row" + std::to_string(static_cast<int>(values[row * 2]));
          const uint32_t length = static_cast<uint32_t>(text.size());
          bytes.append(reinterpret_cast<const char*>(&length), 4);  // little endian here
          bytes += text;
        }
        PYSERVER_RETURN_IF_ERROR(pool()->Allocate(bytes.size(), out.storage.get()));
        std::memcpy(out.storage->Data(), bytes.data(), bytes.size());
        out.byte_size = bytes.size();
      }
      outputs->push_back(std::move(out));
    }
    return Status::Success();
  }
};

NativeRuntimeConfig Config(bool retry) {
  NativeRuntimeConfig config;
  config.model_name = "doubling";
  config.max_batch_size = 8;
  config.inputs.push_back(TensorSpec{"X", DataType::kFp32, {2}});
  config.outputs.push_back(TensorSpec{"DOUBLE", DataType::kFp32, {2}});
  config.outputs.push_back(TensorSpec{"NAME", DataType::kString, {1}});
  config.retry_failed_batch_per_request = retry;
  return config;
}

struct Fixture {
  std::unique_ptr<HostMemoryPool> pool;
  std::vector<std::vector<float>> data;
  std::vector<std::unique_ptr<InferRequest>> requests;

  Fixture() { HostMemoryPool::Create(1 << 20, false, &pool); }

  InferRequest* Add(std::vector<float> values, std::vector<uint32_t> outputs) {
    data.push_back(std::move(values));
    auto request = std::make_unique<InferRequest>();
    request->batch_size = static_cast<uint32_t>(data.back().size() / 2);
    request->inputs.push_back(InputRef{data.back().data(), data.back().size() * sizeof(float),
                                       {static_cast<int64_t>(request->batch_size), 2}});
    request->requested_outputs = std::move(outputs);
    requests.push_back(std::move(request));
    return requests.back().get();
  }

  Batch MakeBatch() {
    Batch batch;
    for (auto& request : requests) {
      batch.requests.push_back(request.get());
      batch.total_batch_size += request->batch_size;
    }
    return batch;
  }
};

float At(const OutputTensor& t, size_t i) { return static_cast<const float*>(t.Data())[i]; }

std::string StringAt(const OutputTensor& t) {
  uint32_t length = 0;
  std::memcpy(&length, t.Data(), 4);
  return std::string(static_cast<const char*>(t.Data()) + 4, length);
}

TEST(OneRequestGetsOnlyTheOutputsItAskedFor) {
  Fixture f;
  DoublingRuntime runtime(Config(true), f.pool.get());
  InferRequest* r = f.Add({1, 2}, {0});
  Batch batch = f.MakeBatch();
  ExecuteBatch(&runtime, f.pool.get(), &batch);
  EXPECT(r->status.IsOk());
  EXPECT(runtime.last_wanted == std::vector<uint32_t>({0}));
  EXPECT(r->outputs.size() == 1);
  if (r->outputs.size() == 1) {
    EXPECT(r->outputs[0].index == 0);
    EXPECT(r->outputs[0].shape == std::vector<int64_t>({1, 2}));
    EXPECT(At(r->outputs[0], 0) == 2 && At(r->outputs[0], 1) == 4);
  }
}

TEST(BatchOutputsAreScatteredByRowsWithoutCopies) {
  Fixture f;
  DoublingRuntime runtime(Config(true), f.pool.get());
  InferRequest* a = f.Add({1, 1}, {0, 1});
  InferRequest* b = f.Add({2, 2, 3, 3}, {1});
  InferRequest* c = f.Add({4, 4}, {0});
  Batch batch = f.MakeBatch();
  ExecuteBatch(&runtime, f.pool.get(), &batch);
  EXPECT(runtime.runs == 1);
  EXPECT(runtime.last_wanted == std::vector<uint32_t>({0, 1}));
  EXPECT(a->status.IsOk() && b->status.IsOk() && c->status.IsOk());
  EXPECT(a->outputs.size() == 2 && b->outputs.size() == 1 && c->outputs.size() == 1);
  if (a->outputs.size() == 2 && b->outputs.size() == 1 && c->outputs.size() == 1) {
    EXPECT(At(a->outputs[0], 0) == 2 && a->outputs[0].shape[0] == 1);
    EXPECT(StringAt(a->outputs[1]) == "row1");
    EXPECT(b->outputs[0].index == 1 && b->outputs[0].shape == std::vector<int64_t>({2, 1}));
    EXPECT(StringAt(b->outputs[0]) == "row2");
    EXPECT(At(c->outputs[0], 0) == 8 && At(c->outputs[0], 1) == 8);
    // The same storage, at the rows' offsets.
    EXPECT(a->outputs[0].storage == c->outputs[0].storage);
    EXPECT(c->outputs[0].offset == 3 * 2 * sizeof(float));
  }
}

TEST(FailedBatchRunsEachRequestAloneWhenAllowed) {
  Fixture f;
  DoublingRuntime runtime(Config(true), f.pool.get());
  InferRequest* good = f.Add({1, 1}, {0});
  InferRequest* bad = f.Add({-1, 1}, {0});
  InferRequest* other = f.Add({5, 5}, {0});
  Batch batch = f.MakeBatch();
  ExecuteBatch(&runtime, f.pool.get(), &batch);
  EXPECT(runtime.runs == 4);  // the batch, then each alone
  EXPECT(good->status.IsOk() && other->status.IsOk());
  EXPECT(bad->status.Code() == StatusCode::kInvalidArg);
  EXPECT(bad->outputs.empty());
  if (other->outputs.size() == 1) EXPECT(At(other->outputs[0], 0) == 10);
}

TEST(FailedBatchFailsWholeWhenRetryIsOff) {
  Fixture f;
  DoublingRuntime runtime(Config(false), f.pool.get());
  InferRequest* good = f.Add({1, 1}, {0});
  InferRequest* bad = f.Add({-1, 1}, {0});
  Batch batch = f.MakeBatch();
  ExecuteBatch(&runtime, f.pool.get(), &batch);
  EXPECT(runtime.runs == 1);  // nobody runs twice
  EXPECT(good->status.Code() == StatusCode::kInvalidArg);
  EXPECT(bad->status.Code() == StatusCode::kInvalidArg);
}

TEST(StringLayoutIsCheckedAgainstItsBytes) {
  const unsigned char bytes[] = {2, 0, 0, 0, 'h', 'i', 1, 0, 0, 0, 'x'};
  size_t used = 0;
  EXPECT(StringElementsByteSize(bytes, sizeof(bytes), 2, &used).IsOk() && used == 11);
  EXPECT(!StringElementsByteSize(bytes, sizeof(bytes), 3, &used).IsOk());
  EXPECT(!StringElementsByteSize(bytes, 5, 1, &used).IsOk());
  uint64_t count = 0;
  EXPECT(ElementCount({4, 0, 3}, &count).IsOk() && count == 0);
  EXPECT(!ElementCount({int64_t(1) << 40, int64_t(1) << 40}, &count).IsOk());
  EXPECT(!ElementCount({-1}, &count).IsOk());
}

}  // namespace
}  // namespace pyserver


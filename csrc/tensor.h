// Tensors as the core sees them: a data type, a shape and bytes. No Python,
// no protocols.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "host_memory_pool.h"
#include "status.h"

namespace pyserver {

// The v1 DataType numbers (protos/model_config.proto), so a type travels
// between the config, the core and the wire unchanged.
enum class DataType : int32_t {
  kInvalid = 0,
  kBool = 1,
  kUint8 = 2,
  kUint16 = 3,
  kUint32 = 4,
  kUint64 = 5,
  kInt8 = 6,
  kInt16 = 7,
  kInt32 = 8,
  kInt64 = 9,
  kFp16 = 10,
  kFp32 = 11,
  kFp64 = 12,
  kString = 13,
};

// Bytes per element; 0 for kString and kInvalid.
size_t ElementByteSize(DataType type);

// Elements of `shape` (1 for a scalar). Fails with INVALID_ARG on a negative
// dimension or a product that overflows 64 bits.
Status ElementCount(const std::vector<int64_t>& shape, uint64_t* count);

// The layout of kString tensors everywhere in the core (and on the v1 and v2
// wire): each element is a 4-byte little-endian length, then that many bytes.
// Walks `elements` elements from `data`; sets `*consumed` to the bytes they
// take. Fails with INVALID_ARG when the bytes run out.
Status StringElementsByteSize(const void* data, size_t byte_size, uint64_t elements,
                              size_t* consumed);

// The borrowed bytes of one tensor. The owner keeps `data` alive for as long
// as the view is used.
struct TensorView {
  DataType type = DataType::kInvalid;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t byte_size = 0;
};

// A tensor a runtime produced. `storage` owns the bytes; the outputs
// scattered from one batch share their batch's storage at different offsets,
// so scattering copies nothing. Movable; read-only once completed.
struct OutputTensor {
  uint32_t index = 0;  // position of the output in the model config
  DataType type = DataType::kInvalid;
  std::vector<int64_t> shape;
  std::shared_ptr<PooledBuffer> storage;
  size_t offset = 0;
  size_t byte_size = 0;

  const void* Data() const {
    return static_cast<const char*>(storage->Data()) + offset;
  }
};

}  // namespace pyserver

#include "tensor.h"

#include <cstring>

namespace pyserver {

size_t ElementByteSize(DataType type) {
  switch (type) {
    case DataType::kBool:
    case DataType::kUint8:
    case DataType::kInt8:
      return 1;
    case DataType::kUint16:
    case DataType::kInt16:
    case DataType::kFp16:
      return 2;
    case DataType::kUint32:
    case DataType::kInt32:
    case DataType::kFp32:
      return 4;
    case DataType::kUint64:
    case DataType::kInt64:
    case DataType::kFp64:
      return 8;
    case DataType::kString:
    case DataType::kInvalid:
      return 0;
  }
  return 0;
}

Status ElementCount(const std::vector<int64_t>& shape, uint64_t* count) {
  uint64_t product = 1;
  for (int64_t dim : shape) {
    if (dim < 0) return Status(StatusCode::kInvalidArg, "negative tensor dimension");
    if (dim != 0 && product > UINT64_MAX / static_cast<uint64_t>(dim)) {
      return Status(StatusCode::kInvalidArg, "tensor element count overflows 64 bits");
    }
    product *= static_cast<uint64_t>(dim);
  }
  *count = product;
  return Status::Success();
}

Status StringElementsByteSize(const void* data, size_t byte_size, uint64_t elements,
                              size_t* consumed) {
  const unsigned char* bytes = static_cast<const unsigned char*>(data);
  size_t offset = 0;
  for (uint64_t i = 0; i < elements; ++i) {
    if (byte_size - offset < 4) {
      return Status(StatusCode::kInvalidArg, "string tensor ends inside an element's length");
    }
    const uint32_t length = static_cast<uint32_t>(bytes[offset]) |
                            static_cast<uint32_t>(bytes[offset + 1]) << 8 |
                            static_cast<uint32_t>(bytes[offset + 2]) << 16 |
                            static_cast<uint32_t>(bytes[offset + 3]) << 24;
    offset += 4;
    if (byte_size - offset < length) {
      return Status(StatusCode::kInvalidArg, "string tensor ends inside an element");
    }
    offset += length;
  }
  *consumed = offset;
  return Status::Success();
}

}  // namespace pyserver

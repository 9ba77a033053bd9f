// CudaIpcRegion: another process's device memory, opened from its
// cudaIpcMemHandle_t, as a CUDA shared-memory region for tensors.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "status.h"

namespace pyserver {

class CudaIpcRegion {
 public:
  // Opens the allocation named by `raw_handle` (exactly 64 bytes) on
  // `device_id` and checks that `byte_size` bytes from its start lie within
  // the allocation. UNAVAILABLE when there is no CUDA runtime, device or IPC
  // support; INVALID_ARG for a malformed handle, an unknown device or a size
  // past the allocation. Blocks while CUDA maps the memory. Thread safe.
  static Status Create(const std::string& raw_handle, int64_t device_id, uint64_t byte_size,
                       std::unique_ptr<CudaIpcRegion>* region);

  // Unmaps the memory. The caller makes sure no copy is running.
  ~CudaIpcRegion();

  CudaIpcRegion(const CudaIpcRegion&) = delete;
  CudaIpcRegion& operator=(const CudaIpcRegion&) = delete;

  // Copies `bytes` from `offset` of the region into host memory at `dst`
  // (or from `src` into the region). INVALID_ARG when offset + bytes
  // (checked without overflow) passes the region's end; INTERNAL when CUDA
  // fails. Blocks until the copy is done; safe from any thread.
  Status CopyToHost(uint64_t offset, void* dst, uint64_t bytes) const;
  Status CopyFromHost(uint64_t offset, const void* src, uint64_t bytes) const;

  int64_t device_id() const { return device_id_; }
  uint64_t byte_size() const { return byte_size_; }

 private:
  CudaIpcRegion(void* data, int64_t device_id, uint64_t byte_size)
      : data_(data), device_id_(device_id), byte_size_(byte_size) {}

  Status CheckRange(uint64_t offset, uint64_t bytes) const;

  void* data_;
  int64_t device_id_;
  uint64_t byte_size_;
};

}  // namespace pyserver

// CudaStream: the CUDA stream of one GPU instance, for its asynchronous
// host <-> device copies.
#pragma once

#include <cstddef>
#include <memory>

#include "status.h"

namespace pyserver {

// Owns one stream on one device; destroys it on destruction. One instance
// thread uses it at a time (not thread safe).
class CudaStream {
 public:
  // UNAVAILABLE when no CUDA runtime or no such device is present.
  static Status Create(int device, std::unique_ptr<CudaStream>* stream);
  ~CudaStream();

  int Device() const { return device_; }
  // The cudaStream_t, for libraries that take a stream (ONNX Runtime's CUDA
  // provider). Owned by this object.
  void* Handle() const { return handle_; }

  // Queues a copy on the stream; returns once it is queued, not done.
  Status CopyToDevice(void* device_dst, const void* host_src, size_t bytes);
  Status CopyToHost(void* host_dst, const void* device_src, size_t bytes);
  // Blocks until every queued copy has finished.
  Status Synchronize();

 private:
  CudaStream(int device, void* handle) : device_(device), handle_(handle) {}
  int device_;
  void* handle_;
};

}  // namespace pyserver

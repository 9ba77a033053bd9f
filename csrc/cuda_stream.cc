#include "cuda_stream.h"

#include <string>

#include "cuda_runtime.h"

namespace pyserver {

Status CudaStream::Create(int device, std::unique_ptr<CudaStream>* stream) {
  const CudaRuntime* cuda = CudaRuntime::Get();
  if (cuda == nullptr) {
    return Status(StatusCode::kUnavailable, "no CUDA runtime library or device is present");
  }
  if (device < 0 || device >= cuda->DeviceCount()) {
    return Status(StatusCode::kUnavailable, "no CUDA device " + std::to_string(device));
  }
  void* handle = cuda->CreateStream(device);
  if (handle == nullptr) {
    return Status(StatusCode::kInternal, "cudaStreamCreate failed on device " +
                                             std::to_string(device));
  }
  stream->reset(new CudaStream(device, handle));
  return Status::Success();
}

CudaStream::~CudaStream() { CudaRuntime::Get()->DestroyStream(handle_); }

Status CudaStream::CopyToDevice(void* device_dst, const void* host_src, size_t bytes) {
  if (!CudaRuntime::Get()->CopyAsync(device_dst, host_src, bytes, CudaRuntime::kHostToDevice,
                                     handle_)) {
    return Status(StatusCode::kInternal, "cudaMemcpyAsync to device failed");
  }
  return Status::Success();
}

Status CudaStream::CopyToHost(void* host_dst, const void* device_src, size_t bytes) {
  if (!CudaRuntime::Get()->CopyAsync(host_dst, device_src, bytes, CudaRuntime::kDeviceToHost,
                                     handle_)) {
    return Status(StatusCode::kInternal, "cudaMemcpyAsync to host failed");
  }
  return Status::Success();
}

Status CudaStream::Synchronize() {
  if (!CudaRuntime::Get()->Synchronize(handle_)) {
    return Status(StatusCode::kInternal, "cudaStreamSynchronize failed");
  }
  return Status::Success();
}

}  // namespace pyserver

#include "cuda_ipc_region.h"

#include "cuda_runtime.h"

namespace pyserver {

Status CudaIpcRegion::Create(const std::string& raw_handle, int64_t device_id,
                             uint64_t byte_size, std::unique_ptr<CudaIpcRegion>* region) {
  const CudaRuntime* cuda = CudaRuntime::Get();
  if (cuda == nullptr) {
    return Status(StatusCode::kUnavailable,
                  "CUDA shared memory needs a CUDA runtime and a GPU; this server has none");
  }
  if (!cuda->HasIpc()) {
    return Status(StatusCode::kUnavailable, "the CUDA runtime lacks CUDA IPC support");
  }
  if (raw_handle.size() != CudaRuntime::kIpcHandleBytes) {
    return Status(StatusCode::kInvalidArg,
                  "raw_handle must be a " + std::to_string(CudaRuntime::kIpcHandleBytes) +
                      "-byte cudaIpcMemHandle_t, got " + std::to_string(raw_handle.size()) +
                      " bytes");
  }
  if (device_id < 0 || device_id >= cuda->DeviceCount()) {
    return Status(StatusCode::kInvalidArg,
                  "device_id " + std::to_string(device_id) + " is not a GPU of this server");
  }
  if (byte_size == 0) {
    return Status(StatusCode::kInvalidArg, "byte_size must be at least 1");
  }
  void* data = nullptr;
  int error = cuda->IpcOpen(static_cast<int>(device_id), raw_handle.data(), &data);
  if (error != 0) {
    return Status(StatusCode::kInvalidArg, std::string("failed to open the CUDA IPC handle: ") +
                                               cuda->ErrorName(error));
  }
  size_t available = 0;
  error = cuda->AllocationBytesFrom(data, &available);
  if (error != 0 || available < byte_size) {
    cuda->IpcClose(data);
    if (error != 0) {
      return Status(StatusCode::kUnavailable,
                    "cannot verify the size of the CUDA allocation (no CUDA driver call)");
    }
    return Status(StatusCode::kInvalidArg,
                  "byte_size " + std::to_string(byte_size) +
                      " exceeds the CUDA allocation of the handle (" +
                      std::to_string(available) + " bytes)");
  }
  region->reset(new CudaIpcRegion(data, device_id, byte_size));
  return Status::Success();
}

CudaIpcRegion::~CudaIpcRegion() { CudaRuntime::Get()->IpcClose(data_); }

Status CudaIpcRegion::CheckRange(uint64_t offset, uint64_t bytes) const {
  if (offset > byte_size_ || bytes > byte_size_ - offset) {
    return Status(StatusCode::kInvalidArg,
                  "offset " + std::to_string(offset) + " and byte size " +
                      std::to_string(bytes) + " pass the end of the shared memory region");
  }
  return Status::Success();
}

Status CudaIpcRegion::CopyToHost(uint64_t offset, void* dst, uint64_t bytes) const {
  PYSERVER_RETURN_IF_ERROR(CheckRange(offset, bytes));
  if (bytes == 0) return Status::Success();
  const CudaRuntime* cuda = CudaRuntime::Get();
  int error = cuda->Copy(static_cast<int>(device_id_), dst, static_cast<char*>(data_) + offset,
                         bytes, CudaRuntime::kDeviceToHost);
  if (error != 0) {
    return Status(StatusCode::kInternal,
                  std::string("CUDA copy from shared memory failed: ") + cuda->ErrorName(error));
  }
  return Status::Success();
}

Status CudaIpcRegion::CopyFromHost(uint64_t offset, const void* src, uint64_t bytes) const {
  PYSERVER_RETURN_IF_ERROR(CheckRange(offset, bytes));
  if (bytes == 0) return Status::Success();
  const CudaRuntime* cuda = CudaRuntime::Get();
  int error = cuda->Copy(static_cast<int>(device_id_), static_cast<char*>(data_) + offset, src,
                         bytes, CudaRuntime::kHostToDevice);
  if (error != 0) {
    return Status(StatusCode::kInternal,
                  std::string("CUDA copy into shared memory failed: ") + cuda->ErrorName(error));
  }
  return Status::Success();
}

}  // namespace pyserver

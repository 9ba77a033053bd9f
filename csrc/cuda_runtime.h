// CudaRuntime: the few CUDA runtime calls the core uses, loaded at run time
// (dlopen of libcudart) so the core builds and runs where CUDA is absent.
#pragma once

#include <cstddef>

namespace pyserver {

class CudaRuntime {
 public:
  // The process-wide instance, or nullptr when no CUDA runtime library or no
  // device is present. Thread safe; loads once.
  static const CudaRuntime* Get();

  int DeviceCount() const { return device_count_; }

  // Page-locked host memory; nullptr on failure.
  void* HostAlloc(size_t bytes) const;
  void HostFree(void* data) const;

  // Device memory on `device`; nullptr on failure.
  void* DeviceAlloc(int device, size_t bytes) const;
  void DeviceFree(void* data) const;

  // One stream per GPU instance; nullptr on failure.
  void* CreateStream(int device) const;
  void DestroyStream(void* stream) const;
  // Host-to-device / device-to-host copies ordered on `stream`.
  bool CopyAsync(void* dst, const void* src, size_t bytes, int kind, void* stream) const;
  bool Synchronize(void* stream) const;

  static constexpr int kHostToDevice = 1;
  static constexpr int kDeviceToHost = 2;

  // CUDA IPC (another process's device memory). False when this runtime
  // lacks the IPC calls (then the IPC functions below must not be called).
  bool HasIpc() const { return ipc_open_ != nullptr; }
  // Maps the allocation named by a cudaIpcMemHandle_t (kIpcHandleBytes bytes)
  // on `device`; returns the CUDA error code (0 = success) and sets *data.
  int IpcOpen(int device, const void* handle, void** data) const;
  // Unmaps what IpcOpen mapped; returns the CUDA error code.
  int IpcClose(void* data) const;
  // Synchronous copy of `kind` (kHostToDevice / kDeviceToHost) on `device`;
  // returns the CUDA error code. Blocks until the copy is done.
  int Copy(int device, void* dst, const void* src, size_t bytes, int kind) const;
  // The bytes of the device allocation from `data` to its end
  // (cuMemGetAddressRange of the driver library); returns the CUDA driver
  // error code, or -1 when the driver library lacks the call.
  int AllocationBytesFrom(const void* data, size_t* bytes) const;
  // The CUDA error's name, for messages.
  const char* ErrorName(int error) const;

  static constexpr size_t kIpcHandleBytes = 64;

 private:
  CudaRuntime() = default;
  bool Load();

  int device_count_ = 0;
  int (*host_alloc_)(void**, size_t, unsigned int) = nullptr;
  int (*free_host_)(void*) = nullptr;
  int (*set_device_)(int) = nullptr;
  int (*malloc_)(void**, size_t) = nullptr;
  int (*free_)(void*) = nullptr;
  int (*stream_create_)(void**) = nullptr;
  int (*stream_destroy_)(void*) = nullptr;
  int (*memcpy_async_)(void*, const void*, size_t, int, void*) = nullptr;
  int (*stream_synchronize_)(void*) = nullptr;
  // cudaIpcMemHandle_t is a struct of 64 bytes, passed by value.
  struct IpcHandle {
    char reserved[kIpcHandleBytes];
  };
  int (*ipc_open_)(void**, IpcHandle, unsigned int) = nullptr;
  int (*ipc_close_)(void*) = nullptr;
  int (*memcpy_)(void*, const void*, size_t, int) = nullptr;
  const char* (*error_name_)(int) = nullptr;
  // libcuda: cuMemGetAddressRange_v2(CUdeviceptr* base, size_t* size, CUdeviceptr ptr).
  int (*address_range_)(unsigned long long*, size_t*, unsigned long long) = nullptr;
};

}  // namespace pyserver

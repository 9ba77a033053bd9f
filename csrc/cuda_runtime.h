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
};

}  // namespace pyserver

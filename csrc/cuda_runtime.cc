#include "cuda_runtime.h"

#include <dlfcn.h>

#include <cstring>

namespace pyserver {

const CudaRuntime* CudaRuntime::Get() {
  static const CudaRuntime* runtime = [] {
    auto* loaded = new CudaRuntime();
    if (!loaded->Load()) {
      delete loaded;
      return static_cast<CudaRuntime*>(nullptr);
    }
    return loaded;
  }();
  return runtime;
}

bool CudaRuntime::Load() {
  const char* names[] = {"libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"};
  void* lib = nullptr;
  for (const char* name : names) {
    lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib != nullptr) break;
  }
  if (lib == nullptr) return false;
  int (*get_device_count)(int*) = reinterpret_cast<int (*)(int*)>(dlsym(lib, "cudaGetDeviceCount"));
  host_alloc_ = reinterpret_cast<decltype(host_alloc_)>(dlsym(lib, "cudaHostAlloc"));
  free_host_ = reinterpret_cast<decltype(free_host_)>(dlsym(lib, "cudaFreeHost"));
  set_device_ = reinterpret_cast<decltype(set_device_)>(dlsym(lib, "cudaSetDevice"));
  malloc_ = reinterpret_cast<decltype(malloc_)>(dlsym(lib, "cudaMalloc"));
  free_ = reinterpret_cast<decltype(free_)>(dlsym(lib, "cudaFree"));
  stream_create_ = reinterpret_cast<decltype(stream_create_)>(dlsym(lib, "cudaStreamCreate"));
  stream_destroy_ = reinterpret_cast<decltype(stream_destroy_)>(dlsym(lib, "cudaStreamDestroy"));
  memcpy_async_ = reinterpret_cast<decltype(memcpy_async_)>(dlsym(lib, "cudaMemcpyAsync"));
  stream_synchronize_ =
      reinterpret_cast<decltype(stream_synchronize_)>(dlsym(lib, "cudaStreamSynchronize"));
  // Optional: CUDA IPC for CUDA shared-memory regions.
  ipc_open_ = reinterpret_cast<decltype(ipc_open_)>(dlsym(lib, "cudaIpcOpenMemHandle"));
  ipc_close_ = reinterpret_cast<decltype(ipc_close_)>(dlsym(lib, "cudaIpcCloseMemHandle"));
  memcpy_ = reinterpret_cast<decltype(memcpy_)>(dlsym(lib, "cudaMemcpy"));
  error_name_ = reinterpret_cast<decltype(error_name_)>(dlsym(lib, "cudaGetErrorName"));
  void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (driver != nullptr) {
    address_range_ =
        reinterpret_cast<decltype(address_range_)>(dlsym(driver, "cuMemGetAddressRange_v2"));
  }
  if (!ipc_open_ || !ipc_close_ || !memcpy_) {
    ipc_open_ = nullptr;
    ipc_close_ = nullptr;
    memcpy_ = nullptr;
  }
  if (!get_device_count || !host_alloc_ || !free_host_ || !set_device_ || !malloc_ || !free_ ||
      !stream_create_ ||
      !stream_destroy_ || !memcpy_async_ || !stream_synchronize_) {
    return false;
  }
  if (get_device_count(&device_count_) != 0 || device_count_ <= 0) return false;
  return true;
}

void* CudaRuntime::HostAlloc(size_t bytes) const {
  void* data = nullptr;
  // cudaHostAllocPortable (1): pinned for every device context.
  return host_alloc_(&data, bytes, 1) == 0 ? data : nullptr;
}

void CudaRuntime::HostFree(void* data) const { free_host_(data); }

void* CudaRuntime::DeviceAlloc(int device, size_t bytes) const {
  void* data = nullptr;
  if (set_device_(device) != 0 || malloc_(&data, bytes) != 0) return nullptr;
  return data;
}

void CudaRuntime::DeviceFree(void* data) const { free_(data); }

void* CudaRuntime::CreateStream(int device) const {
  void* stream = nullptr;
  if (set_device_(device) != 0 || stream_create_(&stream) != 0) return nullptr;
  return stream;
}

void CudaRuntime::DestroyStream(void* stream) const { stream_destroy_(stream); }

bool CudaRuntime::CopyAsync(void* dst, const void* src, size_t bytes, int kind,
                            void* stream) const {
  return memcpy_async_(dst, src, bytes, kind, stream) == 0;
}

bool CudaRuntime::Synchronize(void* stream) const { return stream_synchronize_(stream) == 0; }

int CudaRuntime::IpcOpen(int device, const void* handle, void** data) const {
  int error = set_device_(device);
  if (error != 0) return error;
  IpcHandle value;
  std::memcpy(value.reserved, handle, kIpcHandleBytes);
  // cudaIpcMemLazyEnablePeerAccess (1)
  return ipc_open_(data, value, 1);
}

int CudaRuntime::IpcClose(void* data) const { return ipc_close_(data); }

int CudaRuntime::Copy(int device, void* dst, const void* src, size_t bytes, int kind) const {
  int error = set_device_(device);
  if (error != 0) return error;
  return memcpy_(dst, src, bytes, kind);
}

int CudaRuntime::AllocationBytesFrom(const void* data, size_t* bytes) const {
  if (address_range_ == nullptr) return -1;
  unsigned long long base = 0;
  size_t size = 0;
  const auto address = reinterpret_cast<unsigned long long>(data);
  int error = address_range_(&base, &size, address);
  if (error != 0) return error;
  if (address < base || address - base > size) return -1;
  *bytes = size - static_cast<size_t>(address - base);
  return 0;
}

const char* CudaRuntime::ErrorName(int error) const {
  const char* name = error_name_ != nullptr ? error_name_(error) : nullptr;
  return name != nullptr ? name : "cudaError";
}

}  // namespace pyserver

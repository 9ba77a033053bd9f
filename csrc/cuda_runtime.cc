#include "cuda_runtime.h"

#include <dlfcn.h>

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

}  // namespace pyserver

// Unit tests of CudaStream; the device round trip skips without a GPU.

#include <cstring>
#include <memory>

#include "cuda_runtime.h"
#include "cuda_stream.h"
#include "host_memory_pool.h"
#include "unit_test.h"

namespace pyserver {
namespace {

TEST(CudaStreamRoundTripsThroughDeviceMemory) {
  const CudaRuntime* cuda = CudaRuntime::Get();
  if (cuda == nullptr) {
    SKIP("no CUDA runtime library (libcudart) or no CUDA device on this machine");
  }
  std::unique_ptr<CudaStream> stream;
  EXPECT(CudaStream::Create(0, &stream).IsOk());
  std::unique_ptr<HostMemoryPool> pool;
  EXPECT(HostMemoryPool::Create(1 << 20, true, &pool).IsOk());
  EXPECT(pool->Stats().pinned);
  PooledBuffer host_in, host_out;
  EXPECT(pool->Allocate(4096, &host_in).IsOk());
  EXPECT(pool->Allocate(4096, &host_out).IsOk());
  for (int i = 0; i < 1024; ++i) static_cast<float*>(host_in.Data())[i] = static_cast<float>(i);
  void* device = cuda->DeviceAlloc(0, 4096);
  EXPECT(device != nullptr);
  EXPECT(stream->CopyToDevice(device, host_in.Data(), 4096).IsOk());
  EXPECT(stream->CopyToHost(host_out.Data(), device, 4096).IsOk());
  EXPECT(stream->Synchronize().IsOk());
  EXPECT(std::memcmp(host_in.Data(), host_out.Data(), 4096) == 0);
  cuda->DeviceFree(device);
}

TEST(CudaStreamCreateFailsCleanlyWithoutADevice) {
  std::unique_ptr<CudaStream> stream;
  const int missing = CudaRuntime::Get() == nullptr ? 0 : CudaRuntime::Get()->DeviceCount();
  Status status = CudaStream::Create(missing, &stream);
  EXPECT(status.Code() == StatusCode::kUnavailable);
  EXPECT(stream == nullptr);
}

}  // namespace
}  // namespace pyserver

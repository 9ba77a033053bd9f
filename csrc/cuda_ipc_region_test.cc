// Unit tests of CudaIpcRegion: refusals that need no second process; with
// no GPU, registration fails UNAVAILABLE naming the reason.

#include <memory>
#include <string>

#include "cuda_ipc_region.h"
#include "cuda_runtime.h"
#include "unit_test.h"

namespace pyserver {
namespace {

TEST(CudaIpcRegionWithoutAGpuIsUnavailable) {
  if (CudaRuntime::Get() != nullptr) SKIP("this machine has a CUDA device");
  std::unique_ptr<CudaIpcRegion> region;
  Status status = CudaIpcRegion::Create(std::string(64, '\0'), 0, 16, &region);
  EXPECT(status.Code() == StatusCode::kUnavailable);
  EXPECT(status.Message().find("GPU") != std::string::npos);
  EXPECT(region == nullptr);
}

TEST(CudaIpcRegionRefusesAHandleOfTheWrongSize) {
  if (CudaRuntime::Get() == nullptr || !CudaRuntime::Get()->HasIpc()) {
    SKIP("no CUDA runtime library (libcudart) with IPC or no CUDA device on this machine");
  }
  std::unique_ptr<CudaIpcRegion> region;
  Status status = CudaIpcRegion::Create(std::string(63, '\0'), 0, 16, &region);
  EXPECT(status.Code() == StatusCode::kInvalidArg);
  EXPECT(region == nullptr);
}

TEST(CudaIpcRegionRefusesAnUnknownDevice) {
  const CudaRuntime* cuda = CudaRuntime::Get();
  if (cuda == nullptr || !cuda->HasIpc()) {
    SKIP("no CUDA runtime library (libcudart) with IPC or no CUDA device on this machine");
  }
  std::unique_ptr<CudaIpcRegion> region;
  EXPECT(CudaIpcRegion::Create(std::string(64, '\0'), cuda->DeviceCount(), 16, &region).Code() ==
         StatusCode::kInvalidArg);
  EXPECT(CudaIpcRegion::Create(std::string(64, '\0'), -1, 16, &region).Code() ==
         StatusCode::kInvalidArg);
}

TEST(CudaIpcRegionRefusesAGarbageHandle) {
  const CudaRuntime* cuda = CudaRuntime::Get();
  if (cuda == nullptr || !cuda->HasIpc()) {
    SKIP("no CUDA runtime library (libcudart) with IPC or no CUDA device on this machine");
  }
  std::unique_ptr<CudaIpcRegion> region;
  Status status = CudaIpcRegion::Create(std::string(64, '\x5a'), 0, 16, &region);
  EXPECT(status.Code() == StatusCode::kInvalidArg);
  EXPECT(region == nullptr);
}

}  // namespace
}  // namespace pyserver

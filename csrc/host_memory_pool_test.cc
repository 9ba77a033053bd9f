// Unit tests of HostMemoryPool.

#include <cstdint>
#include <memory>

#include "host_memory_pool.h"
#include "unit_test.h"

namespace pyserver {
namespace {

TEST(PoolReusesBuffersOfTheSameSizeClass) {
  std::unique_ptr<HostMemoryPool> pool;
  EXPECT(HostMemoryPool::Create(1 << 20, false, &pool).IsOk());
  void* first = nullptr;
  {
    PooledBuffer buffer;
    EXPECT(pool->Allocate(1000, &buffer).IsOk());
    EXPECT(buffer.Capacity() == 1024 && buffer.Size() == 1000);
    EXPECT(reinterpret_cast<uintptr_t>(buffer.Data()) % 64 == 0);
    first = buffer.Data();
    EXPECT(pool->Stats().bytes_in_use == 1024);
  }
  PooledBuffer again;
  EXPECT(pool->Allocate(700, &again).IsOk());
  EXPECT(again.Data() == first);
  HostMemoryPoolStats stats = pool->Stats();
  EXPECT(stats.allocations == 2 && stats.reuses == 1);
  EXPECT(!stats.pinned);
}

TEST(PoolReleasesBuffersBeyondItsCacheLimit) {
  std::unique_ptr<HostMemoryPool> pool;
  HostMemoryPool::Create(2048, false, &pool);
  {
    PooledBuffer a, b, c;
    pool->Allocate(1024, &a);
    pool->Allocate(1024, &b);
    pool->Allocate(1024, &c);
  }
  EXPECT(pool->Stats().bytes_cached == 2048);
  EXPECT(pool->Stats().bytes_in_use == 0);
}

}  // namespace
}  // namespace pyserver

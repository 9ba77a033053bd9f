#include "host_memory_pool.h"

#include <cstdlib>

#include "cuda_runtime.h"

namespace pyserver {
namespace {

constexpr size_t kMinClass = 256;
constexpr size_t kAlignment = 64;

size_t SizeClass(size_t bytes) {
  size_t capacity = kMinClass;
  while (capacity < bytes) capacity <<= 1;
  return capacity;
}

}  // namespace

PooledBuffer& PooledBuffer::operator=(PooledBuffer&& other) noexcept {
  if (this != &other) {
    Reset();
    pool_ = other.pool_;
    data_ = other.data_;
    capacity_ = other.capacity_;
    size_ = other.size_;
    other.pool_ = nullptr;
    other.data_ = nullptr;
    other.capacity_ = other.size_ = 0;
  }
  return *this;
}

void PooledBuffer::Reset() {
  if (pool_ != nullptr && data_ != nullptr) pool_->Release(data_, capacity_);
  pool_ = nullptr;
  data_ = nullptr;
  capacity_ = size_ = 0;
}

Status HostMemoryPool::Create(size_t max_cached_bytes, bool try_pinned,
                              std::unique_ptr<HostMemoryPool>* pool) {
  const bool pinned = try_pinned && CudaRuntime::Get() != nullptr;
  pool->reset(new HostMemoryPool(max_cached_bytes, pinned));
  (*pool)->stats_.pinned = pinned;
  return Status::Success();
}

HostMemoryPool::~HostMemoryPool() {
  for (auto& entry : free_) {
    for (void* data : entry.second) SystemFree(data);
  }
}

void* HostMemoryPool::SystemAlloc(size_t bytes) {
  if (pinned_) return CudaRuntime::Get()->HostAlloc(bytes);
  return std::aligned_alloc(kAlignment, bytes);
}

void HostMemoryPool::SystemFree(void* data) {
  if (pinned_) {
    CudaRuntime::Get()->HostFree(data);
  } else {
    std::free(data);
  }
}

Status HostMemoryPool::Allocate(size_t bytes, PooledBuffer* buffer) {
  const size_t capacity = SizeClass(bytes);
  void* data = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.allocations += 1;
    stats_.bytes_in_use += capacity;
    auto it = free_.find(capacity);
    if (it != free_.end() && !it->second.empty()) {
      data = it->second.back();
      it->second.pop_back();
      stats_.reuses += 1;
      stats_.bytes_cached -= capacity;
    }
  }
  if (data == nullptr) data = SystemAlloc(capacity);
  if (data == nullptr) {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.bytes_in_use -= capacity;
    return Status(StatusCode::kInternal,
                  "out of host memory allocating " + std::to_string(capacity) + " bytes");
  }
  *buffer = PooledBuffer(this, data, capacity, bytes);
  return Status::Success();
}

void HostMemoryPool::Release(void* data, size_t capacity) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.bytes_in_use -= capacity;
    if (stats_.bytes_cached + capacity <= max_cached_bytes_) {
      free_[capacity].push_back(data);
      stats_.bytes_cached += capacity;
      return;
    }
  }
  SystemFree(data);
}

HostMemoryPoolStats HostMemoryPool::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace pyserver

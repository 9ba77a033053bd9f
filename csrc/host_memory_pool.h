// HostMemoryPool: reusable host buffers for batch gathering, pinned (page
// locked through the CUDA runtime) where a CUDA device exists.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "status.h"

namespace pyserver {

class HostMemoryPool;

// A buffer on loan from a pool; returns itself to the pool when destroyed.
// Movable, not copyable. Not thread safe itself; the pool is.
class PooledBuffer {
 public:
  PooledBuffer() = default;
  PooledBuffer(HostMemoryPool* pool, void* data, size_t capacity, size_t size)
      : pool_(pool), data_(data), capacity_(capacity), size_(size) {}
  PooledBuffer(PooledBuffer&& other) noexcept { *this = std::move(other); }
  PooledBuffer& operator=(PooledBuffer&& other) noexcept;
  PooledBuffer(const PooledBuffer&) = delete;
  PooledBuffer& operator=(const PooledBuffer&) = delete;
  ~PooledBuffer() { Reset(); }

  void* Data() const { return data_; }
  size_t Size() const { return size_; }
  size_t Capacity() const { return capacity_; }
  // Returns the memory to its pool now.
  void Reset();

 private:
  HostMemoryPool* pool_ = nullptr;
  void* data_ = nullptr;
  size_t capacity_ = 0;
  size_t size_ = 0;
};

struct HostMemoryPoolStats {
  uint64_t allocations = 0;  // Allocate calls
  uint64_t reuses = 0;       // served from a free list
  uint64_t bytes_in_use = 0;
  uint64_t bytes_cached = 0;  // free, kept for reuse
  bool pinned = false;
};

// Buffers come in power-of-two size classes (at least 256 bytes, 64-byte
// aligned). Freed buffers are kept per class for reuse while the cached total
// stays under `max_cached_bytes`; beyond it they are released to the system.
// Thread safe; Allocate and release take one short mutex.
class HostMemoryPool {
 public:
  // `try_pinned`: page-lock buffers with cudaHostAlloc when a CUDA runtime
  // library and a device are present; otherwise plain aligned memory.
  static Status Create(size_t max_cached_bytes, bool try_pinned,
                       std::unique_ptr<HostMemoryPool>* pool);
  ~HostMemoryPool();

  // A buffer of at least `bytes`. Fails only when the system is out of memory.
  Status Allocate(size_t bytes, PooledBuffer* buffer);

  HostMemoryPoolStats Stats() const;

 private:
  friend class PooledBuffer;
  HostMemoryPool(size_t max_cached_bytes, bool pinned)
      : max_cached_bytes_(max_cached_bytes), pinned_(pinned) {}
  void Release(void* data, size_t capacity);
  void* SystemAlloc(size_t bytes);
  void SystemFree(void* data);

  const size_t max_cached_bytes_;
  const bool pinned_;
  mutable std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;  // capacity -> buffers; guarded
  HostMemoryPoolStats stats_;                  // guarded by mu_
};

}  // namespace pyserver

// KeyHash: a fast seeded 64-bit hash of a byte string, for the response
// cache's keys (whole requests, up to the cache's size).
#pragma once

#include <cstddef>
#include <cstdint>

namespace pyserver {

// Returns a 64-bit hash of `size` bytes at `data` under `seed`. Reads 32
// bytes per step in four independent multiply-rotate lanes (about memory
// speed), then mixes the tail and the length in and avalanches. Not a
// cryptographic hash, and equal hashes do not mean equal bytes: callers
// compare the bytes on a hash match. Pure function: thread safe, does not
// block, never allocates; `data` may be unaligned, and null when size is 0.
uint64_t KeyHash(const void* data, size_t size, uint64_t seed);

}  // namespace pyserver

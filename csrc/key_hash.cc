#include "key_hash.h"

#include <cstring>

namespace pyserver {
namespace {

// Odd 64-bit constants with well-spread bits (from the golden ratio and
// other irrationals), as multiplicative hashing wants.
constexpr uint64_t kMul1 = 0x9E3779B97F4A7C15ull;
constexpr uint64_t kMul2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kMul3 = 0x165667B19E3779F9ull;

inline uint64_t RotateLeft(uint64_t x, int bits) { return (x << bits) | (x >> (64 - bits)); }

inline uint64_t Load64(const unsigned char* p) {
  uint64_t value;
  std::memcpy(&value, p, sizeof(value));
  return value;
}

inline uint64_t Lane(uint64_t acc, uint64_t word) {
  return RotateLeft(acc + word * kMul2, 31) * kMul1;
}

// The 64-bit finaliser of MurmurHash3: every input bit reaches every output bit.
inline uint64_t Avalanche(uint64_t h) {
  h ^= h >> 33;
  h *= 0xFF51AFD7ED558CCDull;
  h ^= h >> 33;
  h *= 0xC4CEB9FE1A85EC53ull;
  h ^= h >> 33;
  return h;
}

}  // namespace

uint64_t KeyHash(const void* data, size_t size, uint64_t seed) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  size_t left = size;
  uint64_t a = seed + kMul1 + kMul2;
  uint64_t b = seed + kMul2;
  uint64_t c = seed;
  uint64_t d = seed - kMul1;
  while (left >= 32) {
    a = Lane(a, Load64(p));
    b = Lane(b, Load64(p + 8));
    c = Lane(c, Load64(p + 16));
    d = Lane(d, Load64(p + 24));
    p += 32;
    left -= 32;
  }
  uint64_t h = RotateLeft(a, 1) + RotateLeft(b, 7) + RotateLeft(c, 12) + RotateLeft(d, 18);
  h = (h ^ Lane(0, a)) * kMul1 + kMul3;
  h = (h ^ Lane(0, b)) * kMul1 + kMul3;
  h = (h ^ Lane(0, c)) * kMul1 + kMul3;
  h = (h ^ Lane(0, d)) * kMul1 + kMul3;
  h += static_cast<uint64_t>(size);
  while (left >= 8) {
    h = RotateLeft(h ^ Lane(0, Load64(p)), 27) * kMul1 + kMul3;
    p += 8;
    left -= 8;
  }
  if (left > 0) {
    uint64_t tail = 0;
    std::memcpy(&tail, p, left);
    h = RotateLeft(h ^ Lane(0, tail ^ (static_cast<uint64_t>(left) << 56)), 23) * kMul2;
  }
  return Avalanche(h ^ seed);
}

}  // namespace pyserver

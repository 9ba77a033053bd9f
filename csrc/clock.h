// Monotonic nanosecond clock shared by the core and the Python layer
// (CLOCK_MONOTONIC, the clock behind Python's time.monotonic_ns()).
#pragma once

#include <cstdint>
#include <ctime>

namespace pyserver {

inline uint64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull +
         static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace pyserver

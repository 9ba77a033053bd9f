// Unit tests of KeyHash.

#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "key_hash.h"
#include "unit_test.h"

namespace pyserver {
namespace {

TEST(KeyHashIsAFunctionOfBytesAndSeed) {
  const std::string text = "the same bytes, twice over, in two buffers";
  std::vector<char> copy(text.begin(), text.end());
  EXPECT(KeyHash(text.data(), text.size(), 7) == KeyHash(copy.data(), copy.size(), 7));
  EXPECT(KeyHash(text.data(), text.size(), 7) != KeyHash(text.data(), text.size(), 8));
  EXPECT(KeyHash(nullptr, 0, 7) == KeyHash(text.data(), 0, 7));
}

TEST(KeyHashSeesEveryByteAndTheLength) {
  std::vector<unsigned char> bytes(1000, 0);
  std::set<uint64_t> seen;
  seen.insert(KeyHash(bytes.data(), bytes.size(), 1));
  for (size_t i = 0; i < bytes.size(); ++i) {  // one bit flipped anywhere: lanes and tail
    bytes[i] ^= 1;
    seen.insert(KeyHash(bytes.data(), bytes.size(), 1));
    bytes[i] ^= 1;
  }
  for (size_t size = 0; size < 100; ++size) seen.insert(KeyHash(bytes.data(), size, 1));
  EXPECT(seen.size() == 1 + bytes.size() + 100);  // no two of them share a hash
}

TEST(KeyHashReadsUnalignedData) {
  std::vector<unsigned char> buffer(128);
  for (size_t i = 0; i < buffer.size(); ++i) buffer[i] = static_cast<unsigned char>(i * 37);
  std::vector<unsigned char> shifted(buffer.size() + 3);
  std::memcpy(shifted.data() + 3, buffer.data(), buffer.size());
  EXPECT(KeyHash(buffer.data(), buffer.size(), 5) ==
         KeyHash(shifted.data() + 3, buffer.size(), 5));
}

}  // namespace
}  // namespace pyserver

// The core's unit-test harness: no external framework, one binary per
// *_test.cc, each test case registered with ctest on its own (CMakeLists.txt
// finds the cases by the `TEST(Name)` lines at the start of a line).
//
//   TEST(QueueKeepsOrder) { EXPECT(a == b); if (!device) SKIP("no device"); }
//
// `<binary> Name` runs one case, `<binary>` all of them; each prints
// "PASS|FAIL|SKIP Name[: reason]". Exit status: 0 when none failed and one
// ran, 1 when any failed, kSkipExitCode when all that ran skipped.
#pragma once

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace pyserver {
namespace testing {

constexpr int kSkipExitCode = 77;  // ctest's SKIP_RETURN_CODE

// The outcome of one test case. Written by the case's own thread only.
class Result {
 public:
  void Fail(const char* file, int line, const char* expression) {
    std::fprintf(stderr, "  %s:%d: expected %s\n", file, line, expression);
    failed_ = true;
  }
  void Skip(const char* reason) { skip_reason_ = reason; }
  bool failed() const { return failed_; }
  const char* skip_reason() const { return skip_reason_; }

 private:
  bool failed_ = false;
  const char* skip_reason_ = nullptr;
};

using TestFunction = void (*)(Result*);

struct TestCase {
  const char* name;
  TestFunction function;
};

inline std::vector<TestCase>& Registry() {
  static std::vector<TestCase> cases;
  return cases;
}

inline bool Register(const char* name, TestFunction function) {
  Registry().push_back({name, function});
  return true;
}

// Runs the case named by argv[1], or every case; returns the exit status.
inline int RunUnitTests(int argc, char** argv) {
  const char* only = argc > 1 ? argv[1] : nullptr;
  int passed = 0, failed = 0, skipped = 0;
  for (const TestCase& test : Registry()) {
    if (only != nullptr && std::strcmp(only, test.name) != 0) continue;
    Result result;
    test.function(&result);
    if (result.failed()) {
      std::printf("FAIL %s\n", test.name);
      failed += 1;
    } else if (result.skip_reason() != nullptr) {
      std::printf("SKIP %s: %s\n", test.name, result.skip_reason());
      skipped += 1;
    } else {
      std::printf("PASS %s\n", test.name);
      passed += 1;
    }
  }
  std::printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
  if (passed + failed + skipped == 0) {
    std::fprintf(stderr, "no test case named %s\n", only != nullptr ? only : "(any)");
    return 1;
  }
  if (failed > 0) return 1;
  return passed == 0 ? kSkipExitCode : 0;
}

}  // namespace testing
}  // namespace pyserver

#define TEST(name)                                                                  \
  void name(::pyserver::testing::Result* test_result_);                             \
  [[maybe_unused]] const bool name##_registered_ =                                  \
      ::pyserver::testing::Register(#name, &name);                                  \
  void name(::pyserver::testing::Result* test_result_)

#define EXPECT(condition)                                                           \
  do {                                                                              \
    if (!(condition)) test_result_->Fail(__FILE__, __LINE__, #condition);          \
  } while (false)

// Fails the case and ends it: what follows cannot run (an earlier EXPECT
// usually says why).
#define STOP_CASE()                                                       \
  do {                                                                      \
    test_result_->Fail(__FILE__, __LINE__, "the case to get this far");    \
    return;                                                                 \
  } while (false)

// Ends the case as skipped, with the reason shown by ctest's output and pytest.
#define SKIP(reason)                \
  do {                              \
    test_result_->Skip(reason);     \
    return;                         \
  } while (false)

// Status: the result of every failable call in the core.
#pragma once

#include <string>
#include <utility>

namespace pyserver {

// Codes are the v1 RequestStatusCode values, so a status travels to the wire
// unchanged (protos/request_status.proto), plus kCancelled.
enum class StatusCode : int {
  kSuccess = 1,
  kUnknown = 2,
  kInternal = 3,
  kNotFound = 4,
  kInvalidArg = 5,
  kUnavailable = 6,
  kUnsupported = 7,
  kAlreadyExists = 8,
  // Not a v1 code: the caller gave the request up before it ran.
  kCancelled = 9,
};

// A code and a message. Cheap to copy when successful (empty message).
class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message)
      : code_(code), message_(std::move(message)) {}

  static Status Success() { return Status(); }

  // For bindings that carry the code as a plain integer.
  static Status FromCode(int code, std::string message) {
    return Status(static_cast<StatusCode>(code), std::move(message));
  }

  bool IsOk() const { return code_ == StatusCode::kSuccess; }
  StatusCode Code() const { return code_; }
  int CodeValue() const { return static_cast<int>(code_); }
  const std::string& Message() const { return message_; }

 private:
  StatusCode code_ = StatusCode::kSuccess;
  std::string message_;
};

#define PYSERVER_RETURN_IF_ERROR(expr)        \
  do {                                        \
    ::pyserver::Status status__ = (expr);     \
    if (!status__.IsOk()) return status__;    \
  } while (false)

}  // namespace pyserver

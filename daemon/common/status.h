// One error model for threadscope: Status / StatusOr<T>, in the style of absl::Status.
//
// Codes mirror the canonical gRPC codes so the service layer converts them 1:1
// (daemon/service/status_convert.cc). Inside the daemon and the client, functions that can
// fail for reasons the caller should handle return Status or StatusOr<T>; impossible states
// after start-up are bugs and abort (see STYLE.md, "Errors").
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace threadscope {

enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "NOT_FOUND: no process with pid 42"
  std::string ToString() const;

  // Returns a copy whose message is "<context>: <message>", keeping the code.
  Status WithContext(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status OkStatus() { return Status(); }
Status InvalidArgumentError(std::string message);
Status NotFoundError(std::string message);
Status PermissionDeniedError(std::string message);
Status FailedPreconditionError(std::string message);
Status AbortedError(std::string message);
Status UnavailableError(std::string message);
Status InternalError(std::string message);
Status UnimplementedError(std::string message);
Status ResourceExhaustedError(std::string message);
Status DataLossError(std::string message);
Status AlreadyExistsError(std::string message);
Status OutOfRangeError(std::string message);

// Maps an errno value to the closest code; the message is "<what>: <strerror>".
Status ErrnoToStatus(int err, const std::string& what);

template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(const Status& status) : value_(status) { assert(!status.ok()); }  // NOLINT
  StatusOr(Status&& status) : value_(std::move(status)) {                     // NOLINT
    assert(!std::get<Status>(value_).ok());
  }
  StatusOr(const T& value) : value_(value) {}       // NOLINT
  StatusOr(T&& value) : value_(std::move(value)) {}  // NOLINT

  bool ok() const { return std::holds_alternative<T>(value_); }
  Status status() const { return ok() ? Status() : std::get<Status>(value_); }

  const T& value() const& { return std::get<T>(value_); }
  T& value() & { return std::get<T>(value_); }
  T&& value() && { return std::get<T>(std::move(value_)); }
  const T& operator*() const& { return value(); }
  T& operator*() & { return value(); }
  const T* operator->() const { return &value(); }
  T* operator->() { return &value(); }

 private:
  std::variant<Status, T> value_;
};

}  // namespace threadscope

#define TS_STATUS_CONCAT_INNER_(a, b) a##b
#define TS_STATUS_CONCAT_(a, b) TS_STATUS_CONCAT_INNER_(a, b)

#define TS_RETURN_IF_ERROR(expr)                  \
  do {                                            \
    ::threadscope::Status ts_status_ = (expr);    \
    if (!ts_status_.ok()) return ts_status_;      \
  } while (0)

#define TS_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()

#define TS_ASSIGN_OR_RETURN(lhs, expr) \
  TS_ASSIGN_OR_RETURN_IMPL_(TS_STATUS_CONCAT_(ts_statusor_, __LINE__), lhs, expr)

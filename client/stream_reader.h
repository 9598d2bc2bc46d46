// Reading a server stream of the API (WatchEvents, StreamRecording): the one loop, with one
// policy, used in the foreground (export) or on a thread of its own beside the live view (events
// printed or collected, a recording written).
//
// The handler sees each message and says whether to go on. The stream's status is the caller's:
// a stream cancelled by this side (Stop(), or the handler said stop) is not an error.
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <thread>

#include "daemon/common/status.h"

namespace threadscope::client {

template <typename Response>
using StreamOpener =
    std::function<std::unique_ptr<grpc::ClientReaderInterface<Response>>(grpc::ClientContext*)>;
// Returns false to stop reading (the stream is then cancelled).
template <typename Response>
using StreamHandler = std::function<bool(const Response&)>;

// Reads until the stream ends or the handler says stop; returns how many messages it handled.
template <typename Response>
Status ReadStream(const StreamOpener<Response>& open, grpc::ClientContext* ctx,
                  const StreamHandler<Response>& handle, size_t* handled = nullptr) {
  auto reader = open(ctx);
  Response r;
  size_t n = 0;
  while (reader->Read(&r)) {
    ++n;
    if (!handle(r)) {
      ctx->TryCancel();
      break;
    }
  }
  if (handled) *handled = n;
  grpc::Status s = reader->Finish();
  if (s.ok() || s.error_code() == grpc::StatusCode::CANCELLED) return OkStatus();
  return Status(static_cast<StatusCode>(s.error_code()), s.error_message());
}

// ReadStream on a thread of its own. The handler runs on that thread.
template <typename Response>
class BackgroundStream {
 public:
  BackgroundStream(StreamOpener<Response> open, StreamHandler<Response> handle)
      : thread_([this, open = std::move(open), handle = std::move(handle)] {
          status_ = ReadStream(open, &ctx_, handle);
        }) {}
  ~BackgroundStream() { Stop(); }
  BackgroundStream(const BackgroundStream&) = delete;
  BackgroundStream& operator=(const BackgroundStream&) = delete;

  // Waits for the stream to end by itself (the target finished or was detached); its status.
  Status Finish() {
    if (thread_.joinable()) thread_.join();
    return status_;
  }
  // Cancels the stream and waits for the thread.
  void Stop() {
    ctx_.TryCancel();
    if (thread_.joinable()) thread_.join();
  }

 private:
  grpc::ClientContext ctx_;  // before thread_: the thread uses it from its first instruction
  Status status_;
  std::thread thread_;
};

}  // namespace threadscope::client

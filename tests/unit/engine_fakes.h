// Test doubles for the engine's seams (after Envoy's test/mocks and Pixie's replaying
// BCCWrapper), besides the clock (fake_clock.h): a record source serving batches the test pushes (generated
// or from a recording), a process that exits when told, a frame resolver answering from a table,
// and a /proc tree in $TEST_TMPDIR. With them, LiveSession and SessionManager run without a
// kernel, without root and without waiting on real time.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "daemon/loader/record_source.h"
#include "daemon/target/process_handle.h"
#include "daemon/target/py_code.h"
#include "probes/threadscope_events.h"
#include "tests/unit/fake_clock.h"
#include "tests/unit/test_env.h"

namespace threadscope::testing {

// A record source serving what the test pushes, as the ring buffer would: Poll waits (up to its
// timeout) for a batch, then delivers everything pending.
class FakeRecordSource final : public loader::RecordSource {
 public:
  // What the test keeps to drive a source the session owns.
  struct Control {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::string> pending;
    uint64_t drops[TS_DROP_SLOTS] = {};
    bool detached = false;
    std::vector<bool> acquire_stacks;  // SetAcquireStacks calls, in order
    bool can_switch_gil = false;       // false: SetGilWaitsOnly is Unimplemented, as for a
                                       // build with no --gil waits sites
    std::vector<bool> gil_waits_only;  // SetGilWaitsOnly calls that switched, in order
    bool can_pause = true;             // false: SetTracingPaused is Unimplemented
    std::vector<bool> paused;          // SetTracingPaused calls that switched, in order
    size_t polls = 0;
    size_t delivered_batches = 0;
    // Probe hits the source reports (ProbeHits); unset: it cannot count them.
    std::optional<loader::ProbeHitCounts> hits;
  };

  FakeRecordSource() : control_(std::make_shared<Control>()) {}
  const std::shared_ptr<Control>& control() const { return control_; }

  StatusOr<size_t> Poll(int timeout_ms, const loader::RecordCallback& callback) override {
    std::unique_lock<std::mutex> lock(control_->mu);
    ++control_->polls;
    control_->cv.notify_all();
    control_->cv.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                          [&] { return !control_->pending.empty(); });
    return DeliverLocked(lock, callback);
  }
  StatusOr<size_t> Drain(const loader::RecordCallback& callback) override {
    std::unique_lock<std::mutex> lock(control_->mu);
    return DeliverLocked(lock, callback);
  }
  uint64_t Drops(uint32_t source) const override {
    std::lock_guard<std::mutex> lock(control_->mu);
    return source < TS_DROP_SLOTS ? control_->drops[source] : 0;
  }
  void DetachAll() override {
    std::lock_guard<std::mutex> lock(control_->mu);
    control_->detached = true;
  }
  Status SetAcquireStacks(bool on) override {
    std::lock_guard<std::mutex> lock(control_->mu);
    control_->acquire_stacks.push_back(on);
    return OkStatus();
  }
  Status SetGilWaitsOnly(bool on) override {
    std::lock_guard<std::mutex> lock(control_->mu);
    if (!control_->can_switch_gil) return RecordSource::SetGilWaitsOnly(on);
    control_->gil_waits_only.push_back(on);
    return OkStatus();
  }
  Status SetTracingPaused(bool paused) override {
    std::lock_guard<std::mutex> lock(control_->mu);
    if (!control_->can_pause) return RecordSource::SetTracingPaused(paused);
    control_->paused.push_back(paused);
    return OkStatus();
  }

  StatusOr<loader::ProbeHitCounts> ProbeHits() const override {
    std::lock_guard<std::mutex> lock(control_->mu);
    if (!control_->hits) return UnimplementedError("this fake does not count probe hits");
    return *control_->hits;
  }

  // For the test, through the control block (the session owns the source).
  static void SetHits(Control& c, const loader::ProbeHitCounts& hits) {
    std::lock_guard<std::mutex> lock(c.mu);
    c.hits = hits;
  }
  static void Push(Control& c, std::string batch) {
    std::lock_guard<std::mutex> lock(c.mu);
    c.pending.push_back(std::move(batch));
    c.cv.notify_all();
  }
  static void SetDrops(Control& c, uint32_t source, uint64_t total) {
    std::lock_guard<std::mutex> lock(c.mu);
    c.drops[source] = total;
  }
  static bool Detached(Control& c) {
    std::lock_guard<std::mutex> lock(c.mu);
    return c.detached;
  }
  // Blocks until the consumer has polled `n` more times: everything pushed before has been
  // delivered and ingested (the consumer ingests a batch before it polls again).
  static bool WaitPolls(Control& c, size_t n, std::chrono::seconds timeout = std::chrono::seconds(10)) {
    std::unique_lock<std::mutex> lock(c.mu);
    size_t target = c.polls + n;
    return c.cv.wait_for(lock, timeout, [&] { return c.polls >= target; });
  }

 private:
  StatusOr<size_t> DeliverLocked(std::unique_lock<std::mutex>& lock,
                                 const loader::RecordCallback& callback) {
    std::deque<std::string> batches;
    batches.swap(control_->pending);
    control_->delivered_batches += batches.size();
    lock.unlock();
    for (const auto& b : batches) callback(reinterpret_cast<const uint8_t*>(b.data()), b.size());
    return batches.size();
  }

  std::shared_ptr<Control> control_;
};

// A target process that lives until the test ends it.
class FakeProcess final : public target::Process {
 public:
  FakeProcess(pid_t pid, uint64_t start_ticks = 4242) : pid_(pid), start_ticks_(start_ticks) {}
  pid_t pid() const override { return pid_; }
  uint64_t start_ticks() const override { return start_ticks_; }
  bool Alive() const override { return alive_; }
  void Exit() { alive_ = false; }

 private:
  pid_t pid_;
  uint64_t start_ticks_;
  std::atomic<bool> alive_{true};
};

// Frames named from a table; counts what it was asked.
class FakeFrameResolver final : public target::FrameResolver {
 public:
  struct Shared {
    std::mutex mu;
    std::map<std::pair<uint64_t, uint64_t>, target::ResolvedFrame> frames;
    std::map<std::pair<uint64_t, uint64_t>, int> asked;
    // Called on each question (e.g. the process exits while its memory is read).
    std::function<void()> on_resolve;
  };
  explicit FakeFrameResolver(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}
  target::ResolvedFrame Resolve(uint64_t code, uint64_t instr) override {
    std::function<void()> hook;
    target::ResolvedFrame out;
    {
      std::lock_guard<std::mutex> lock(shared_->mu);
      ++shared_->asked[{code, instr}];
      auto it = shared_->frames.find({code, instr});
      if (it != shared_->frames.end()) out = it->second;
      hook = shared_->on_resolve;
    }
    if (hook) hook();
    return out;
  }

 private:
  std::shared_ptr<Shared> shared_;
};

inline target::ResolvedFrame PythonFrame(std::string file, std::string function, int line) {
  target::ResolvedFrame f;
  f.kind = target::ResolvedFrame::Kind::kPython;
  f.file = std::move(file);
  f.function = std::move(function);
  f.line = line;
  return f;
}

// A /proc tree for one process: its status (credentials) and its tasks' stat lines.
class ProcFixture {
 public:
  ProcFixture(const std::string& root, pid_t pid) : root_(root), pid_(pid) {
    mkdir((root_ + "/" + std::to_string(pid)).c_str(), 0755);
    mkdir((root_ + "/" + std::to_string(pid) + "/task").c_str(), 0755);
    SetCredentials(1000, 1000);
  }
  const std::string& root() const { return root_; }

  void SetCredentials(uint32_t uid, uint32_t gid) {
    std::ofstream(Dir() + "/status")
        << "Name:\tpython3\nState:\tS (sleeping)\nTgid:\t" << pid_ << "\nPPid:\t1\nUid:\t" << uid
        << "\t" << uid << "\t" << uid << "\t" << uid << "\nGid:\t" << gid << "\t" << gid << "\t"
        << gid << "\t" << gid << "\nNSpid:\t" << pid_ << "\n";
  }
  // A task, as /proc/PID/task/TID/stat shows it: field 22 is its start, in ticks after boot.
  void AddTask(pid_t tid, const std::string& comm, uint64_t start_ticks) {
    std::string dir = Dir() + "/task/" + std::to_string(tid);
    mkdir(dir.c_str(), 0755);
    std::ofstream out(dir + "/stat");
    out << tid << " (" << comm << ") S 1 " << pid_;
    for (int field = 6; field <= 21; ++field) out << " 0";
    out << " " << start_ticks << " 0 0\n";
  }

 private:
  std::string Dir() const { return root_ + "/" + std::to_string(pid_); }
  std::string root_;
  pid_t pid_;
};

// Waits for `done` (checked every millisecond) up to `timeout`; true when it came.
inline bool WaitUntil(const std::function<bool()>& done,
                      std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace threadscope::testing

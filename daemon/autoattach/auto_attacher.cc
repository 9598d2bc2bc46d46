#include "daemon/autoattach/auto_attacher.h"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "daemon/autoattach/cgroup.h"
#include "daemon/common/text.h"
#include "daemon/target/elf_file.h"

namespace threadscope::autoattach {

namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr size_t kMaxExeKinds = 512;
// Classifying an executable reads its symbol tables: bounded like any target file, and in time.
constexpr auto kClassifyDeadline = std::chrono::milliseconds(1000);
constexpr auto kMaxCheckInterval = std::chrono::milliseconds(50);

// Reads at most `max` bytes of a /proc file (a command line can be megabytes).
std::string ReadBounded(const std::string& path, size_t max) {
  std::string out;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return out;
  char buf[8192];
  while (out.size() < max) {
    ssize_t n = read(fd, buf, std::min(sizeof(buf), max - out.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

std::string Cmdline(const std::string& dir) {
  std::string raw = ReadBounded(dir + "/cmdline", kMaxMatchedBytes);
  while (!raw.empty() && raw.back() == '\0') raw.pop_back();
  std::replace(raw.begin(), raw.end(), '\0', ' ');
  return raw;
}

const char* RefusalFor(StatusCode code) {
  return code == StatusCode::kResourceExhausted ? "daemon_limit" : nullptr;
}

const char* FailureFor(StatusCode code) {
  switch (code) {
    case StatusCode::kAborted:
    case StatusCode::kNotFound: return "exited";
    case StatusCode::kFailedPrecondition: return "unsupported";
    default: return "error";
  }
}

}  // namespace

const std::vector<std::string>& AutoAttacher::RefusalReasons() {
  static const std::vector<std::string> r = {"limit", "daemon_limit", "busy"};
  return r;
}

const std::vector<std::string>& AutoAttacher::FailureReasons() {
  static const std::vector<std::string> r = {"not_cpython", "cpython_timeout", "exited",
                                             "execed",      "unsupported",     "error"};
  return r;
}

std::unique_ptr<AutoAttacher> AutoAttacher::Start(AutoAttacherOptions options,
                                                  engine::SessionManager& manager,
                                                  std::unique_ptr<ExecSource> execs,
                                                  std::string no_execs_reason) {
  std::unique_ptr<AutoAttacher> a(
      new AutoAttacher(std::move(options), manager, std::move(execs), std::move(no_execs_reason)));
  AutoAttacher* raw = a.get();
  a->listener_ = manager.AddEndedListener([raw](const std::shared_ptr<engine::Session>& s) {
    std::lock_guard<std::mutex> lock(raw->mu_);
    raw->targets_.erase(s->id());
  });
  // The watcher first, then the scan: a process that execs during the scan is seen twice at
  // most (the second sighting of the same image finds it pending or traced), never missed.
  if (a->execs_) a->watcher_ = std::thread([raw] { raw->WatchLoop(); });
  a->matcher_ = std::thread([raw] { raw->MatchLoop(); });
  for (int i = 0; i < std::max(1, a->options_.attach_workers); ++i) {
    a->attachers_.emplace_back([raw] { raw->AttachLoop(); });
  }
  return a;
}

AutoAttacher::AutoAttacher(AutoAttacherOptions options, engine::SessionManager& manager,
                           std::unique_ptr<ExecSource> execs, std::string no_execs_reason)
    : options_(std::move(options)),
      manager_(manager),
      client_{"daemon:auto-attach", 0, true, true},
      execs_(std::move(execs)),
      no_execs_reason_(std::move(no_execs_reason)),
      self_(getpid()) {
  for (const auto& r : options_.config.rules) {
    RuleCounters c;
    c.name = r.name;
    for (const auto& reason : RefusalReasons()) c.refusals[reason] = 0;
    for (const auto& reason : FailureReasons()) c.failures[reason] = 0;
    counters_.push_back(std::move(c));
  }
}

AutoAttacher::~AutoAttacher() {
  manager_.RemoveEndedListener(listener_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  attach_cv_.notify_all();
  if (watcher_.joinable()) watcher_.join();
  if (matcher_.joinable()) matcher_.join();
  for (auto& t : attachers_) {
    if (t.joinable()) t.join();
  }
}

void AutoAttacher::Offer(pid_t pid) {
  std::lock_guard<std::mutex> lock(mu_);
  if (events_.size() >= options_.max_queued_execs) {
    ++execs_dropped_;
    return;
  }
  events_.push_back(pid);
  cv_.notify_one();
}

void AutoAttacher::WatchLoop() {
  // Nothing may escape a daemon thread.
  try {
    std::vector<pid_t> batch;
    auto collect = [&](pid_t pid) { batch.push_back(pid); };
    while (true) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_) return;
      }
      batch.clear();
      auto n = execs_->Poll(200, collect);
      if (!n.ok()) {
        spdlog::warn("auto-attach: {}", n.status().ToString());
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        continue;
      }
      if (batch.empty()) continue;
      std::lock_guard<std::mutex> lock(mu_);
      execs_seen_ += batch.size();
      for (pid_t pid : batch) {
        if (events_.size() >= options_.max_queued_execs) {
          ++execs_dropped_;
          continue;
        }
        events_.push_back(pid);
      }
      cv_.notify_one();
    }
  } catch (const std::exception& e) {
    spdlog::error("auto-attach: exec watcher stopped: {}", e.what());
  }
}

void AutoAttacher::Scan() {
  DIR* dir = opendir(manager_.proc().root().c_str());
  if (!dir) {
    spdlog::warn("auto-attach: cannot list {}: {}", manager_.proc().root(), std::strerror(errno));
    return;
  }
  std::vector<pid_t> pids;
  while (dirent* e = readdir(dir)) {
    const char* name = e->d_name;
    if (!*name || std::strspn(name, "0123456789") != std::strlen(name)) continue;
    long pid = std::strtol(name, nullptr, 10);
    if (pid > 0 && pid != self_) pids.push_back(static_cast<pid_t>(pid));
  }
  closedir(dir);
  {
    std::lock_guard<std::mutex> lock(mu_);
    scanned_ = pids.size();
  }
  for (pid_t pid : pids) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
    }
    HandleExec(pid);
  }
}

void AutoAttacher::MatchLoop() {
  try {
    if (options_.scan_at_start) Scan();
    auto last_prune = SteadyClock::now();
    while (true) {
      std::deque<pid_t> events;
      {
        std::unique_lock<std::mutex> lock(mu_);
        auto until = SteadyClock::now() + std::chrono::seconds(1);
        for (const auto& [pid, p] : pending_) until = std::min(until, p.next_check);
        cv_.wait_until(lock, until, [&] { return stopping_ || !events_.empty(); });
        if (stopping_) return;
        events.swap(events_);
      }
      for (pid_t pid : events) {
        if (pid != self_) HandleExec(pid);
      }
      CheckPending();
      if (SteadyClock::now() - last_prune > std::chrono::seconds(1)) {
        last_prune = SteadyClock::now();
        Prune();
      }
    }
  } catch (const std::exception& e) {
    spdlog::error("auto-attach: matcher stopped: {}", e.what());
  }
}

void AutoAttacher::Refuse(size_t rule, const char* reason) {
  ++counters_[rule].refusals[reason];
}

void AutoAttacher::Fail(size_t rule, const char* reason) { ++counters_[rule].failures[reason]; }

std::optional<ExeKind> AutoAttacher::Classify(pid_t pid) {
  std::string exe = manager_.proc().PidDir(pid) + "/exe";
  struct stat st;
  if (stat(exe.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  ExeKey key{st.st_dev, st.st_ino, st.st_size,
             int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec};
  if (auto it = exe_kinds_.find(key); it != exe_kinds_.end()) return it->second;
  target::ElfOptions elf_options;
  elf_options.budget = target::Budget::WithTimeout(kClassifyDeadline);
  auto elf = target::ElfFile::Open(exe, elf_options);
  if (!elf.ok()) {
    spdlog::debug("auto-attach: pid {}: its executable is not readable ELF: {}", pid,
                  Printable(elf.status().message()));
    return std::nullopt;
  }
  ExeKind kind = ClassifyExecutable(**elf);
  if (exe_kinds_.size() >= kMaxExeKinds) exe_kinds_.clear();
  exe_kinds_[key] = kind;
  return kind;
}

void AutoAttacher::HandleExec(pid_t pid) {
  // A process this attacher traces exec'd a new program: the old image's probes are gone with
  // it. End the daemon's lease on that trace, then look at the new image like any other.
  std::vector<std::string> execed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, owned] : targets_) {
      if (owned.pid == pid) execed.push_back(id);
    }
  }
  for (const auto& id : execed) {
    auto r = manager_.Detach(id, client_, "", false);
    if (r.ok()) spdlog::info("auto-attach: {} exec'd a new program; its trace ends", id);
  }
  if (auto it = pending_.find(pid); it != pending_.end()) {
    std::lock_guard<std::mutex> lock(mu_);
    Fail(it->second.rule, "execed");
    --in_flight_;
    pending_.erase(it);
  }

  // Pin it first: everything read below is then checked to be this process's (Alive()).
  auto process = target::ProcessHandle::Open(pid, manager_.proc());
  if (!process.ok()) return;  // gone already (or a kernel thread)
  const target::ProcFs& proc = manager_.proc();
  ProcessFacts facts;
  auto exe = proc.ExePath(pid);
  if (!exe.ok()) return;  // kernel threads have no executable
  facts.exe = exe->substr(0, kMaxMatchedBytes);
  auto status = proc.Status(pid);
  if (!status.ok()) return;
  facts.uid = status->uid[1];
  std::string dir = proc.PidDir(pid);
  bool have_cmdline = false, have_cgroup = false;
  auto read_cgroup = [&] {
    if (!have_cgroup) facts.cgroup = SelectCgroupPath(ReadBounded(dir + "/cgroup", 64 << 10));
    have_cgroup = true;
  };
  size_t rule = options_.config.rules.size();
  for (size_t i = 0; i < options_.config.rules.size(); ++i) {
    const Matcher& m = options_.config.rules[i].match;
    if (m.needs_cmdline() && !have_cmdline) {
      facts.cmdline = Cmdline(dir);
      have_cmdline = true;
    }
    if (m.needs_cgroup()) read_cgroup();
    if (m.Matches(facts)) {
      rule = i;
      break;
    }
  }
  if (rule == options_.config.rules.size()) return;
  read_cgroup();
  if (!(*process)->Alive()) return;  // what was read may be another process's: ignore it all

  const Rule& r = options_.config.rules[rule];
  std::optional<ExeKind> kind = Classify(pid);
  std::lock_guard<std::mutex> lock(mu_);
  ++counters_[rule].matches;
  auto maps = proc.Maps(pid);
  if (!kind || (!kind->defines_runtime && !kind->needs_libpython &&
                (!maps.ok() || CheckCPython(*kind, *maps) == Readiness::kNotCPython))) {
    spdlog::debug("auto-attach: pid {} ({}) matched rule {} but is not CPython", pid,
                  Printable(facts.exe), r.name);
    Fail(rule, "not_cpython");
    return;
  }
  if (targets_.size() + in_flight_ >= options_.config.max_targets) {
    spdlog::info("auto-attach: pid {} ({}) matched rule {}; refused: {} targets is the limit",
                 pid, Printable(facts.exe), r.name, options_.config.max_targets);
    Refuse(rule, "limit");
    return;
  }
  if (pending_.size() >= options_.max_pending) {
    Refuse(rule, "busy");
    return;
  }
  Pending p;
  p.process = std::move(*process);
  p.rule = rule;
  p.labels = CgroupLabels(IdentifyCgroup(facts.cgroup));
  p.kind = *kind;
  p.deadline = SteadyClock::now() + std::chrono::milliseconds(options_.config.cpython_wait_ms);
  p.next_check = SteadyClock::now();
  ++in_flight_;
  pending_[pid] = std::move(p);
}

void AutoAttacher::CheckPending() {
  auto now = SteadyClock::now();
  for (auto it = pending_.begin(); it != pending_.end();) {
    Pending& p = it->second;
    if (p.next_check > now) {
      ++it;
      continue;
    }
    pid_t pid = it->first;
    const char* failure = nullptr;
    Readiness ready = Readiness::kWait;
    if (!p.process->Alive()) {
      failure = "exited";
    } else {
      auto maps = manager_.proc().Maps(pid);
      if (!maps.ok() || !p.process->Alive()) {
        failure = "exited";
      } else {
        ready = CheckCPython(p.kind, *maps);
        if (ready == Readiness::kNotCPython) failure = "not_cpython";
        if (ready == Readiness::kWait && now >= p.deadline) failure = "cpython_timeout";
      }
    }
    if (failure) {
      std::lock_guard<std::mutex> lock(mu_);
      if (std::string_view(failure) == "cpython_timeout") {
        spdlog::info("auto-attach: pid {} matched rule {} but mapped no interpreter within {} ms",
                     pid, options_.config.rules[p.rule].name, options_.config.cpython_wait_ms);
      }
      Fail(p.rule, failure);
      --in_flight_;
      it = pending_.erase(it);
      continue;
    }
    if (ready == Readiness::kReady) {
      std::lock_guard<std::mutex> lock(mu_);
      ready_.push_back(std::move(p));
      attach_cv_.notify_one();
      it = pending_.erase(it);
      continue;
    }
    // Not yet: libraries appear within milliseconds of exec; look more rarely as time passes.
    p.interval = std::min<std::chrono::milliseconds>(p.interval * 2, kMaxCheckInterval);
    p.next_check = now + p.interval;
    ++it;
  }
}

void AutoAttacher::AttachLoop() {
  while (true) {
    Pending p;
    {
      std::unique_lock<std::mutex> lock(mu_);
      attach_cv_.wait(lock, [&] { return stopping_ || !ready_.empty(); });
      if (stopping_) return;
      p = std::move(ready_.front());
      ready_.pop_front();
    }
    Attach(std::move(p));
  }
}

void AutoAttacher::Attach(Pending p) {
  const Rule& rule = options_.config.rules[p.rule];
  v1::AttachOptions options = rule.options;
  options.set_lease_seconds(0);
  // The rule's labels win over the ones the cgroup gave.
  for (const auto& [k, v] : p.labels) {
    if (!options.labels().count(k)) (*options.mutable_labels())[k] = v;
  }
  pid_t pid = p.process->pid();
  StatusOr<engine::SessionManager::AttachResult> result = InternalError("not attached");
  try {
    result = manager_.Attach(p.process, options, client_);
  } catch (const std::exception& e) {
    result = InternalError(e.what());
  }
  std::lock_guard<std::mutex> lock(mu_);
  --in_flight_;
  if (result.ok()) {
    ++counters_[p.rule].attaches;
    targets_[result->session->id()] = Owned{p.rule, pid, p.process->start_ticks()};
    spdlog::info("auto-attach: rule {} attached {} (pid {}){}", rule.name,
                 result->session->id(), pid,
                 result->newly_attached ? "" : ", shared with the clients tracing it already");
    return;
  }
  const threadscope::Status& s = result.status();
  if (const char* refusal = RefusalFor(s.code())) {
    Refuse(p.rule, refusal);
    spdlog::info("auto-attach: pid {} (rule {}) refused: {}", pid, rule.name,
                 Printable(s.message()));
    return;
  }
  Fail(p.rule, FailureFor(s.code()));
  spdlog::info("auto-attach: pid {} (rule {}) not attached: {}", pid, rule.name,
               Printable(s.ToString()));
}

void AutoAttacher::Prune() {
  // The ended listener takes targets off as they end; this catches a trace that ended between
  // its attach and its entry here.
  std::vector<std::string> ids;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, o] : targets_) ids.push_back(id);
  }
  for (const auto& id : ids) {
    if (manager_.Get(id, nullptr).ok()) continue;
    std::lock_guard<std::mutex> lock(mu_);
    targets_.erase(id);
  }
}

AutoAttacher::Counters AutoAttacher::GetCounters() const {
  Counters c;
  std::lock_guard<std::mutex> lock(mu_);
  c.rules = counters_;
  c.targets = targets_.size();
  c.max_targets = options_.config.max_targets;
  c.execs_seen = execs_seen_;
  c.execs_lost = execs_dropped_ + (execs_ ? execs_->Lost() : 0);
  c.scanned = scanned_;
  c.watching_execs = execs_ != nullptr;
  return c;
}

v1::AutoAttachStatus AutoAttacher::Status(bool with_targets) const {
  Counters c = GetCounters();
  v1::AutoAttachStatus s;
  s.set_enabled(true);
  s.set_exec_source(execs_ ? execs_->Name() : "none: " + no_execs_reason_);
  s.set_max_targets(static_cast<uint32_t>(c.max_targets));
  s.set_targets(static_cast<uint32_t>(c.targets));
  s.set_execs_seen(c.execs_seen);
  s.set_execs_lost(c.execs_lost);
  s.set_processes_scanned(c.scanned);
  s.set_cpython_wait_ms(static_cast<uint32_t>(options_.config.cpython_wait_ms));
  std::map<size_t, std::vector<std::string>> ids;
  if (with_targets) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, o] : targets_) ids[o.rule].push_back(id);
  }
  for (size_t i = 0; i < c.rules.size(); ++i) {
    const RuleCounters& rc = c.rules[i];
    auto* r = s.add_rules();
    r->set_name(rc.name);
    r->set_match(options_.config.rules[i].match.ToString());
    *r->mutable_options() = options_.config.rules[i].options;
    r->set_matches(rc.matches);
    r->set_attaches(rc.attaches);
    uint64_t refusals = 0, failures = 0;
    for (const auto& [k, v] : rc.refusals) {
      refusals += v;
      if (v) (*r->mutable_refusals_by_reason())[k] = v;
    }
    for (const auto& [k, v] : rc.failures) {
      failures += v;
      if (v) (*r->mutable_failures_by_reason())[k] = v;
    }
    r->set_refusals(refusals);
    r->set_failures(failures);
    for (const auto& id : ids[i]) r->add_target_ids(id);
  }
  return s;
}

}  // namespace threadscope::autoattach

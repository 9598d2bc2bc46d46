// Over 600 lines (629) for one reason: the profile's builder and its three formats (pprof out,
// pprof back in, folded stacks) share one table, what each kind of wait is called and counted
// as (TypesOf, RootOf); apart, that table would become a header of its own for two functions.
#include "client/profile.h"

#include <fmt/format.h>
#include <zlib.h>

#include <algorithm>
#include <set>

#include "daemon/common/version.h"
#include "pprof/profile.pb.h"

namespace threadscope::client::profile {

namespace {

// Sample type names. Lock waits use Go's block-profile names so `go tool pprof` and Pyroscope
// read them as they read Go's; holds use Datadog's lock profiler's.
constexpr char kContentions[] = "contentions";
constexpr char kDelay[] = "delay";
constexpr char kConditionWaits[] = "condition-waits";
constexpr char kConditionDelay[] = "condition-delay";
constexpr char kReleases[] = "lock-release";
constexpr char kHold[] = "lock-release-hold";
constexpr char kGilWaits[] = "gil-waits";
constexpr char kGilDelay[] = "gil-delay";

// A GIL wait without a stack; Finish says why, once it knows the target's settings.
constexpr char kNoGilStack[] = "[no Python stack: GIL]";

// The (count, nanoseconds) pair each kind fills.
std::pair<const char*, const char*> TypesOf(Kind k) {
  switch (k) {
    case Kind::kLockWait: return {kContentions, kDelay};
    case Kind::kConditionWait: return {kConditionWaits, kConditionDelay};
    case Kind::kHold: return {kReleases, kHold};
    case Kind::kGilWait: return {kGilWaits, kGilDelay};
  }
  return {kContentions, kDelay};
}

const char* RootOf(Kind k) {
  switch (k) {
    case Kind::kLockWait: return "lock wait";
    case Kind::kConditionWait: return "condition wait";
    case Kind::kHold: return "lock hold";
    case Kind::kGilWait: return "GIL wait";
  }
  return "lock wait";
}

const char* LockKindText(v1::LockKind k) {
  switch (k) {
    case v1::LOCK_KIND_LOCK: return "Lock";
    case v1::LOCK_KIND_RLOCK: return "RLock";
    case v1::LOCK_KIND_JOIN_SENTINEL: return "join-sentinel";
    default: return "unknown";
  }
}

// One aggregate: what a sample will be before its values are laid out.
struct Key {
  Kind kind = Kind::kLockWait;
  int32_t tid = 0;
  std::string lock_id;
  std::string lock_kind;
  std::string outcome;
  std::vector<Frame> frames;
  bool operator<(const Key& o) const {
    return std::tie(kind, tid, lock_id, lock_kind, outcome, frames) <
           std::tie(o.kind, o.tid, o.lock_id, o.lock_kind, o.outcome, o.frames);
  }
};

struct Acc {
  int64_t count = 0;
  int64_t ns = 0;
};

// Frames of a stack, innermost first; an empty stack gets one frame saying why.
std::vector<Frame> FramesOf(const v1::PyStack& s, const std::string& why_empty) {
  std::vector<Frame> out;
  for (const auto& f : s.frames()) {
    out.push_back({f.function().empty() ? "?" : f.function(), f.file(),
                   f.has_line() ? f.line() : 0});
  }
  if (out.empty()) {
    out.push_back({why_empty, "", 0});
  } else if (s.truncated()) {
    // Flame graphs must not merge a cut stack with a complete one that ends at the same frame.
    out.push_back({"[deeper frames not recorded]", "", 0});
  }
  return out;
}

int64_t Sat(uint64_t v) { return v > INT64_MAX ? INT64_MAX : static_cast<int64_t>(v); }

}  // namespace

struct Builder::State {
  std::map<Key, Acc> acc;
  // What the stream carried, per thread (lock, condition, GIL) and per lock (holds): compared
  // with the snapshot's totals at the end.
  std::map<int32_t, Acc> lock_got, cond_got, gil_got;
  std::map<std::string, Acc> hold_got;
  std::map<std::string, std::pair<int32_t, std::string>> lock_kind_by_id;
  uint64_t lost_kernel = 0, lost_client = 0;
  bool gil_stacks_seen = false;

  void Add(Key k, uint64_t count, uint64_t ns) {
    Acc& a = acc[std::move(k)];
    a.count += Sat(count);
    a.ns = Sat(static_cast<uint64_t>(a.ns) + ns);
  }
};

Builder::Builder() : s_(std::make_unique<State>()) {}
Builder::~Builder() = default;
Builder::Builder(Builder&&) noexcept = default;
Builder& Builder::operator=(Builder&&) noexcept = default;

void Builder::Apply(const v1::WatchEventsResponse& r) {
  if (r.has_lost_events()) {
    (r.lost_events().source() == v1::LostEvents::SOURCE_CLIENT_QUEUE ? s_->lost_client
                                                                     : s_->lost_kernel) +=
        r.lost_events().count();
    return;
  }
  if (r.has_lock_event()) {
    const v1::LockEvent& e = r.lock_event();
    if (e.change() == v1::LOCK_CHANGE_WAIT_END) {
      if (e.wait_kind() != v1::WAIT_KIND_LOCK && e.wait_kind() != v1::WAIT_KIND_CONDITION) return;
      bool cond = e.wait_kind() == v1::WAIT_KIND_CONDITION;
      Key k{cond ? Kind::kConditionWait : Kind::kLockWait, e.native_tid(), e.lock_id(),
            LockKindText(e.kind()), e.acquired() ? "acquired" : "timed out",
            FramesOf(e.stack(), "[no Python stack]")};
      s_->Add(std::move(k), 1, e.wait_ns());
      Acc& got = (cond ? s_->cond_got : s_->lock_got)[e.native_tid()];
      ++got.count;
      got.ns = Sat(static_cast<uint64_t>(got.ns) + e.wait_ns());
    } else if (e.change() == v1::LOCK_CHANGE_RELEASED) {
      Key k{Kind::kHold, e.native_tid(), e.lock_id(), LockKindText(e.kind()), "",
            FramesOf(e.stack(), "[no stack where it was taken: --acquire-stacks]")};
      s_->Add(std::move(k), 1, e.hold_ns());
      Acc& got = s_->hold_got[e.lock_id()];
      ++got.count;
      got.ns = Sat(static_cast<uint64_t>(got.ns) + e.hold_ns());
    }
    return;
  }
  if (r.has_gil_event() && r.gil_event().change() == v1::GIL_CHANGE_ACQUIRED) {
    const v1::GilEvent& e = r.gil_event();
    Key k{Kind::kGilWait, e.native_tid(), "", "", "acquired",
          FramesOf(e.stack(), kNoGilStack)};
    s_->Add(std::move(k), 1, e.wait_ns());
    Acc& got = s_->gil_got[e.native_tid()];
    ++got.count;
    got.ns = Sat(static_cast<uint64_t>(got.ns) + e.wait_ns());
  }
}

int Profile::Index(const std::string& type) const {
  for (size_t i = 0; i < sample_types.size(); ++i) {
    if (sample_types[i].type == type) return static_cast<int>(i);
  }
  return -1;
}

int64_t Profile::Total(const std::string& type) const {
  int i = Index(type);
  if (i < 0) return 0;
  int64_t sum = 0;
  for (const auto& s : samples) sum += s.values[i];
  return sum;
}

Profile Builder::Finish(const v1::Snapshot& final) {
  State& s = *s_;
  const v1::Target& target = final.target();
  const uint64_t start = final.trace_start_ns();
  const uint64_t end = final.trace_end_ns() ? final.trace_end_ns() : final.now_ns();
  const bool locks = !target.lock_mode().empty() && target.lock_mode() != "off";
  const bool all = target.lock_mode() == "all";
  const bool gil = final.gil().traced();

  std::map<int32_t, std::string> names;
  for (const auto& t : final.threads()) {
    if (t.native_tid()) names[t.native_tid()] = t.name();
  }
  std::string why_no_wait_stack = "[no Python stack]";
  if (!target.python_stacks().enabled()) {
    why_no_wait_stack = "[no Python stack: " +
                        (target.python_stacks().reason().empty() ? std::string("not recorded")
                                                                 : target.python_stacks().reason()) +
                        "]";
  } else if (target.python_stacks().frames() == 0) {
    why_no_wait_stack = "[no Python stack: --lock-stacks 0]";
  }
  const uint32_t gil_frames = target.python_stacks().frames_gil();
  const std::string why_no_gil_stack =
      !target.python_stacks().enabled()
          ? why_no_wait_stack
      : gil_frames == 0
          ? "[no Python stack: GIL stacks off (--gil-stacks N)]"
          : fmt::format("[no Python stack: GIL wait shorter than --gil-stack-threshold {}ms]",
                        static_cast<double>(target.python_stacks().gil_threshold_ns()) / 1e6);
  // The stream's frames said "[no Python stack]" without knowing why: say it where we can.
  {
    std::map<Key, Acc> renamed;
    for (auto& [k, a] : s.acc) {
      Key nk = k;
      if (nk.frames.size() == 1 && nk.frames[0].function == "[no Python stack]") {
        nk.frames[0].function = why_no_wait_stack;
      }
      if (nk.frames.size() == 1 && nk.frames[0].function == kNoGilStack) {
        nk.frames[0].function = why_no_gil_stack;
      }
      Acc& r = renamed[nk];
      r.count += a.count;
      r.ns += a.ns;
    }
    s.acc = std::move(renamed);
  }
  const std::string residual_why =
      target.lock_threshold_ns() > 0
          ? fmt::format("[no event: waits shorter than --lock-threshold {}ms, or lost]",
                        static_cast<double>(target.lock_threshold_ns()) / 1e6)
          : "[no event: lost from the stream]";

  // Waits still in progress at the end (deadlocked or hung threads), from the final state:
  // they count as waits (as the locks' `contended` do) up to the end of the trace.
  uint64_t unfinished = 0;
  for (const auto& t : final.threads()) {
    if (!t.has_locks() || !t.locks().has_waiting()) continue;
    const v1::LockWait& w = t.locks().waiting();
    if (w.kind() != v1::WAIT_KIND_LOCK && w.kind() != v1::WAIT_KIND_CONDITION) continue;
    std::string kind = "unknown";
    for (const auto& l : final.locks()) {
      if (l.id() == w.lock_id()) kind = LockKindText(l.kind());
    }
    Key k{w.kind() == v1::WAIT_KIND_CONDITION ? Kind::kConditionWait : Kind::kLockWait,
          t.native_tid(), w.lock_id(), kind, "still waiting",
          FramesOf(w.stack(), why_no_wait_stack)};
    s.Add(std::move(k), 1, end > w.since_ns() ? end - w.since_ns() : 0);
    ++unfinished;
  }
  // What the report counts that the stream did not carry: same totals, no stack.
  auto reconcile = [&](Kind kind, int32_t tid, uint64_t want_count, uint64_t want_ns,
                       const Acc& got, const std::string& why) {
    uint64_t c = want_count > static_cast<uint64_t>(got.count) ? want_count - got.count : 0;
    uint64_t ns = want_ns > static_cast<uint64_t>(got.ns) ? want_ns - got.ns : 0;
    if (c == 0 && ns == 0) return;
    s.Add(Key{kind, tid, "", "", "", {{why, "", 0}}}, c, ns);
  };
  if (locks) {
    std::set<int32_t> seen;
    for (auto it = final.threads().rbegin(); it != final.threads().rend(); ++it) {
      const v1::Thread& t = *it;
      // Per-tid totals live on the latest thread with the tid.
      if (!t.native_tid() || !t.has_locks() || !seen.insert(t.native_tid()).second) continue;
      reconcile(Kind::kLockWait, t.native_tid(), t.locks().lock_waits(), t.locks().lock_wait_ns(),
                s.lock_got[t.native_tid()], residual_why);
      reconcile(Kind::kConditionWait, t.native_tid(), t.locks().condition_waits(),
                t.locks().condition_wait_ns(), s.cond_got[t.native_tid()], residual_why);
    }
    if (all) {
      for (const auto& l : final.locks()) {
        if (!l.has_hold()) continue;
        Acc& got = s.hold_got[l.id()];
        uint64_t c = l.hold().count() > static_cast<uint64_t>(got.count)
                         ? l.hold().count() - got.count : 0;
        uint64_t ns = l.hold().sum_ns() > static_cast<uint64_t>(got.ns)
                          ? l.hold().sum_ns() - got.ns : 0;
        if (c || ns) {
          s.Add(Key{Kind::kHold, 0, l.id(), LockKindText(l.kind()), "",
                    {{"[no event: lost from the stream]", "", 0}}},
                c, ns);
        }
      }
    }
  }
  if (gil) {
    for (const auto& w : final.gil().waiters()) {
      s.Add(Key{Kind::kGilWait, w.native_tid(), "", "", "still waiting",
                {{"[no Python stack: GIL wait in progress]", "", 0}}},
            0, end > w.since_ns() ? end - w.since_ns() : 0);
      Acc& got = s.gil_got[w.native_tid()];
      got.ns = Sat(static_cast<uint64_t>(got.ns) + (end > w.since_ns() ? end - w.since_ns() : 0));
    }
    for (const auto& t : final.gil().per_thread()) {
      // A daemon thread that ends inside take_gil never returns from it: its wait ends at its
      // exit, with no acquisition.
      reconcile(Kind::kGilWait, t.native_tid(), t.acquisitions(), t.wait_ns(),
                s.gil_got[t.native_tid()], "[no event: wait ended by the thread's exit, or lost]");
    }
  }

  Profile p;
  if (locks) {
    p.sample_types = {{kContentions, "count"}, {kDelay, "nanoseconds"},
                      {kConditionWaits, "count"}, {kConditionDelay, "nanoseconds"}};
    if (all) {
      p.sample_types.push_back({kReleases, "count"});
      p.sample_types.push_back({kHold, "nanoseconds"});
    }
  }
  if (gil) {
    p.sample_types.push_back({kGilWaits, "count"});
    p.sample_types.push_back({kGilDelay, "nanoseconds"});
  }
  p.default_sample_type = locks ? kDelay : gil ? kGilDelay : "";
  p.period_type = locks ? SampleType{kContentions, "count"} : SampleType{kGilWaits, "count"};
  p.time_nanos = Sat(start) + target.realtime_offset_ns();
  p.duration_nanos = Sat(end > start ? end - start : 0);
  p.mapping_file = target.interpreter().empty() ? target.executable() : target.interpreter();

  for (const auto& [k, a] : s.acc) {
    auto [count_type, ns_type] = TypesOf(k.kind);
    int ci = p.Index(count_type), ni = p.Index(ns_type);
    if (ci < 0 || ni < 0) continue;  // a kind this trace did not measure
    if (a.count == 0 && a.ns == 0) continue;
    Sample smp;
    smp.kind = k.kind;
    smp.frames = k.frames;
    smp.values.assign(p.sample_types.size(), 0);
    smp.values[ci] = a.count;
    smp.values[ni] = a.ns;
    if (k.tid) {
      auto n = names.find(k.tid);
      if (n != names.end() && !n->second.empty()) smp.labels.push_back({"thread_name", n->second, {}});
      smp.labels.push_back({"tid", "", k.tid});
    }
    if (!k.lock_id.empty()) {
      smp.labels.push_back({"lock_id", k.lock_id, {}});
      smp.labels.push_back({"lock_kind", k.lock_kind, {}});
    }
    switch (k.kind) {
      case Kind::kLockWait: smp.labels.push_back({"wait_kind", "lock", {}}); break;
      case Kind::kConditionWait: smp.labels.push_back({"wait_kind", "condition", {}}); break;
      case Kind::kGilWait: smp.labels.push_back({"wait_kind", "gil", {}}); break;
      case Kind::kHold: break;
    }
    if (!k.outcome.empty()) smp.labels.push_back({"outcome", k.outcome, {}});
    std::sort(smp.labels.begin(), smp.labels.end());
    p.samples.push_back(std::move(smp));
  }

  // Comments: what the profile is, where it came from, and what it cannot say.
  p.comments.push_back(fmt::format("threadscope {}: lock and GIL waits of pid {} ({}), CPython {} ({})",
                                   kThreadscopeVersion, target.pid(), target.executable(),
                                   target.python_version(), p.mapping_file));
  if (!target.command_line().empty()) p.comments.push_back("command: " + target.command_line());
  if (locks) {
    p.comments.push_back(fmt::format(
        "lock tracing: {}; contentions/delay: waits for a lock another thread held, by the "
        "waiter's Python stack when the wait began ({} frames); condition-waits/condition-delay: "
        "Condition.wait, Event.wait, Queue.get (waiting for notify(), not contention)",
        target.lock_mode(), target.python_stacks().frames()));
    if (all) {
      p.comments.push_back(
          target.python_stacks().frames_acquire() > 0
              ? "lock-release/lock-release-hold: holds by the stack that took the lock"
              : "lock-release/lock-release-hold: holds by the stack of the wait that preceded "
                "the take; uncontended takes have no stack (record them with --acquire-stacks)");
    } else {
      p.comments.push_back("holds are not measured in this mode (--locks all measures them)");
    }
    if (target.lock_threshold_ns() > 0) {
      p.comments.push_back(fmt::format(
          "--lock-threshold {}ms: shorter waits have no stack; they are counted under \"{}\"",
          static_cast<double>(target.lock_threshold_ns()) / 1e6, residual_why));
    }
  } else {
    p.comments.push_back("lock tracing off: no lock samples");
  }
  if (gil) {
    p.comments.push_back(
        gil_frames
            ? fmt::format("gil-waits/gil-delay: every take_gil (entry to return), by thread; "
                          "waits of at least {}ms by the Python stack that resumed ({} frames)",
                          static_cast<double>(target.python_stacks().gil_threshold_ns()) / 1e6,
                          gil_frames)
            : "gil-waits/gil-delay: every take_gil (entry to return), by thread; no Python "
              "stacks (record them with --gil-stacks N)");
  } else {
    p.comments.push_back("GIL not traced: no GIL samples" +
                         (target.gil().reason().empty() ? "" : " (" + target.gil().reason() + ")"));
  }
  if (unfinished) {
    p.comments.push_back(fmt::format("{} waits were still in progress at the end (outcome: still "
                                     "waiting), counted up to the end of the trace",
                                     unfinished));
  }
  if (s.lost_kernel || s.lost_client || target.stats().drops()) {
    p.comments.push_back(fmt::format(
        "records lost: {} in the kernel, {} by this client; totals are the model's, waits "
        "without an event are under \"[no event: ...]\"",
        std::max<uint64_t>(s.lost_kernel, target.stats().drops()), s.lost_client));
  }
  return p;
}

Profile Build(const v1::Snapshot& final, const std::vector<v1::WatchEventsResponse>& events) {
  Builder b;
  for (const auto& e : events) b.Apply(e);
  return b.Finish(final);
}

std::string ToPprof(const Profile& p) {
  perftools::profiles::Profile out;
  std::map<std::string, int64_t> strings;
  auto str = [&](const std::string& s) -> int64_t {
    auto [it, inserted] = strings.emplace(s, static_cast<int64_t>(strings.size()));
    if (inserted) out.add_string_table(s);
    return it->second;
  };
  str("");  // string_table[0] must be empty
  for (const auto& t : p.sample_types) {
    auto* v = out.add_sample_type();
    v->set_type(str(t.type));
    v->set_unit(str(t.unit));
  }
  if (!p.default_sample_type.empty()) out.set_default_sample_type(str(p.default_sample_type));
  out.mutable_period_type()->set_type(str(p.period_type.type));
  out.mutable_period_type()->set_unit(str(p.period_type.unit));
  out.set_period(1);
  out.set_time_nanos(p.time_nanos);
  out.set_duration_nanos(p.duration_nanos);
  for (const auto& c : p.comments) out.add_comment(str(c));
  // One mapping: the interpreter, with functions, files and lines already known, so pprof
  // tools do not try to symbolize.
  auto* m = out.add_mapping();
  m->set_id(1);
  m->set_filename(str(p.mapping_file));
  m->set_has_functions(true);
  m->set_has_filenames(true);
  m->set_has_line_numbers(true);
  std::map<std::pair<std::string, std::string>, uint64_t> functions;
  std::map<Frame, uint64_t> locations;
  for (const auto& s : p.samples) {
    auto* smp = out.add_sample();
    for (const auto& f : s.frames) {
      auto loc = locations.find(f);
      if (loc == locations.end()) {
        auto fn = functions.find({f.function, f.file});
        if (fn == functions.end()) {
          auto* pf = out.add_function();
          pf->set_id(functions.size() + 1);
          pf->set_name(str(f.function));
          pf->set_system_name(str(f.function));
          pf->set_filename(str(f.file));
          fn = functions.emplace(std::make_pair(f.function, f.file), pf->id()).first;
        }
        auto* pl = out.add_location();
        pl->set_id(locations.size() + 1);
        pl->set_mapping_id(1);
        auto* line = pl->add_line();
        line->set_function_id(fn->second);
        line->set_line(f.line);
        loc = locations.emplace(f, pl->id()).first;
      }
      smp->add_location_id(loc->second);
    }
    for (int64_t v : s.values) smp->add_value(v);
    for (const auto& l : s.labels) {
      auto* pl = smp->add_label();
      pl->set_key(str(l.key));
      if (l.num) {
        pl->set_num(*l.num);
      } else {
        pl->set_str(str(l.str));
      }
    }
  }
  return out.SerializeAsString();
}

std::string Gzip(const std::string& data) {
  z_stream z{};
  // 15 window bits + 16: a gzip header and trailer rather than zlib's.
  if (deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    return {};
  }
  std::string out(deflateBound(&z, data.size()) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  int rc = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return rc == Z_STREAM_END ? out : std::string();
}

StatusOr<std::string> MaybeGunzip(const std::string& data) {
  if (data.size() < 2 || static_cast<unsigned char>(data[0]) != 0x1f ||
      static_cast<unsigned char>(data[1]) != 0x8b) {
    return data;
  }
  z_stream z{};
  if (inflateInit2(&z, 15 + 16) != Z_OK) return InternalError("zlib: inflateInit2 failed");
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  std::string out;
  char buf[1 << 16];
  int rc = Z_OK;
  while (rc == Z_OK) {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof(buf);
    rc = inflate(&z, Z_NO_FLUSH);
    out.append(buf, sizeof(buf) - z.avail_out);
    if (out.size() > (1u << 30)) rc = Z_MEM_ERROR;
  }
  inflateEnd(&z);
  if (rc != Z_STREAM_END) return DataLossError("not a complete gzip stream (zlib error " +
                                               std::to_string(rc) + ")");
  return out;
}

namespace {

std::string FoldedFrame(const Frame& f) {
  std::string s = f.file.empty()
                      ? f.function
                      : f.line > 0 ? fmt::format("{} ({}:{})", f.function, f.file, f.line)
                                   : fmt::format("{} ({})", f.function, f.file);
  // ';' separates frames and a line ends the stack: neither may appear inside one.
  for (char& c : s) {
    if (c == ';') c = ',';
    if (c == '\n' || c == '\r') c = ' ';
  }
  return s;
}

}  // namespace

std::string ToCollapsed(const Profile& p) {
  std::map<std::string, int64_t> lines;
  for (const auto& s : p.samples) {
    if (s.kind == Kind::kHold) continue;
    int ni = p.Index(TypesOf(s.kind).second);
    if (ni < 0 || s.values[ni] <= 0) continue;
    std::string stack = RootOf(s.kind);
    for (auto it = s.frames.rbegin(); it != s.frames.rend(); ++it) stack += ";" + FoldedFrame(*it);
    lines[stack] += s.values[ni];
  }
  std::string out;
  for (const auto& [stack, v] : lines) out += fmt::format("{} {}\n", stack, v);
  return out;
}

StatusOr<Profile> ParsePprof(const std::string& bytes) {
  TS_ASSIGN_OR_RETURN(std::string raw, MaybeGunzip(bytes));
  perftools::profiles::Profile in;
  if (!in.ParseFromString(raw)) return InvalidArgumentError("not a pprof profile (protobuf)");
  const auto& st = in.string_table();
  auto str = [&](int64_t i) -> StatusOr<std::string> {
    if (i < 0 || i >= st.size()) return InvalidArgumentError("string index out of range");
    return st.Get(static_cast<int>(i));
  };
  if (st.empty() || !st.Get(0).empty()) {
    return InvalidArgumentError("not a pprof profile (string_table[0] must be empty)");
  }
  Profile p;
  for (const auto& t : in.sample_type()) {
    TS_ASSIGN_OR_RETURN(std::string type, str(t.type()));
    TS_ASSIGN_OR_RETURN(std::string unit, str(t.unit()));
    p.sample_types.push_back({type, unit});
  }
  TS_ASSIGN_OR_RETURN(p.default_sample_type, str(in.default_sample_type()));
  p.time_nanos = in.time_nanos();
  p.duration_nanos = in.duration_nanos();
  for (int64_t c : in.comment()) {
    TS_ASSIGN_OR_RETURN(std::string text, str(c));
    p.comments.push_back(text);
  }
  std::map<uint64_t, std::pair<std::string, std::string>> functions;
  for (const auto& f : in.function()) {
    TS_ASSIGN_OR_RETURN(std::string name, str(f.name()));
    TS_ASSIGN_OR_RETURN(std::string file, str(f.filename()));
    functions[f.id()] = {name, file};
  }
  std::map<uint64_t, std::vector<Frame>> locations;
  for (const auto& l : in.location()) {
    std::vector<Frame>& frames = locations[l.id()];
    // A location's lines are innermost (inlined) first.
    for (const auto& line : l.line()) {
      auto fn = functions.find(line.function_id());
      if (fn == functions.end()) return InvalidArgumentError("a line names an unknown function");
      frames.push_back({fn->second.first, fn->second.second, line.line()});
    }
  }
  for (const auto& s : in.sample()) {
    Sample out;
    for (uint64_t id : s.location_id()) {
      auto loc = locations.find(id);
      if (loc == locations.end()) return InvalidArgumentError("a sample names an unknown location");
      out.frames.insert(out.frames.end(), loc->second.begin(), loc->second.end());
    }
    if (s.value_size() != static_cast<int>(p.sample_types.size())) {
      return InvalidArgumentError("a sample has " + std::to_string(s.value_size()) +
                                  " values for " + std::to_string(p.sample_types.size()) +
                                  " sample types");
    }
    out.values.assign(s.value().begin(), s.value().end());
    for (const auto& l : s.label()) {
      Label label;
      TS_ASSIGN_OR_RETURN(label.key, str(l.key()));
      if (l.str()) {
        TS_ASSIGN_OR_RETURN(label.str, str(l.str()));
      } else {
        label.num = l.num();
      }
      if (label.key == "wait_kind") {
        out.kind = label.str == "condition" ? Kind::kConditionWait
                   : label.str == "gil"     ? Kind::kGilWait
                                            : Kind::kLockWait;
      }
      out.labels.push_back(std::move(label));
    }
    bool has_wait_kind = std::any_of(out.labels.begin(), out.labels.end(),
                                     [](const Label& l) { return l.key == "wait_kind"; });
    if (!has_wait_kind) out.kind = Kind::kHold;
    std::sort(out.labels.begin(), out.labels.end());
    p.samples.push_back(std::move(out));
  }
  return p;
}

}  // namespace threadscope::client::profile

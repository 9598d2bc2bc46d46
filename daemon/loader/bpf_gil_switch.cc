// The overhead budget's gil_waits stage on a --gil full trace, while attached: the GIL's
// every-take-and-drop probes (~0.8 us per take and per drop) give way to take_gil's slow path
// only (--gil waits: nothing runs on an uncontended take), and back. A part of BpfTracer of its
// own so the loader's attach code stays as it is.
#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <map>

#include "daemon/loader/bpf_tracer.h"
#include "probes/threadscope_bpf.skel.h"

namespace threadscope::loader {

namespace {

// The probes of --gil full that --gil waits does without. The free-threaded enable/disable
// probes stay: they are rare, and both modes need them.
bool IsFullGilProbe(ProbeId id) {
  switch (id) {
    case ProbeId::kGilTake:
    case ProbeId::kGilTakeReturn:
    case ProbeId::kGilDrop:
    case ProbeId::kGilDropInlined:
    case ProbeId::kGilDropInlinedForced:
    case ProbeId::kGilForced:
      return true;
    default:
      return false;
  }
}

}  // namespace

void BpfTracer::PrepareGilSwitch(const ProbePlan& plan, std::vector<PlannedProbe> waits) {
  gil_full_.clear();
  for (const auto& probe : plan.probes) {
    if (IsFullGilProbe(probe.id) && probe.unavailable.empty()) gil_full_.push_back(probe);
  }
  gil_waits_.clear();
  for (auto& probe : waits) {
    if (probe.unavailable.empty()) gil_waits_.push_back(std::move(probe));
  }
  if (gil_full_.empty()) gil_waits_.clear();  // nothing to switch from
  // The sites name the binaries by the inspection's descriptors (/proc/self/fd/N), which close
  // once the attach is done: open each binary again, now, and attach through our own.
  gil_binaries_ =
      std::shared_ptr<std::vector<int>>(new std::vector<int>, [](std::vector<int>* fds) {
        for (int fd : *fds) close(fd);
        delete fds;
      });
  std::map<std::string, std::string> reopened;
  for (auto* group : {&gil_full_, &gil_waits_}) {
    for (auto& probe : *group) {
      for (auto& site : probe.sites) {
        auto it = reopened.find(site.host_path);
        if (it == reopened.end()) {
          int fd = open(site.host_path.c_str(), O_RDONLY | O_CLOEXEC);
          std::string path = site.host_path;
          if (fd >= 0) {
            gil_binaries_->push_back(fd);
            path = "/proc/self/fd/" + std::to_string(fd);
          } else {
            spdlog::warn("pid {}: cannot reopen {} for the GIL switch", options_.tgid,
                         site.host_path);
          }
          it = reopened.emplace(site.host_path, path).first;
        }
        site.host_path = it->second;
      }
    }
  }
}

Status BpfTracer::SetGilWaitsOnly(bool on) {
  if (gil_waits_.empty()) {
    return UnimplementedError("no --gil waits probes were planned for this trace");
  }
  if (!skel_ || !skel_->bss) return FailedPreconditionError("not loaded");
  if (on == gil_waits_only_) return OkStatus();
  if (paused_) return FailedPreconditionError("the duty cycle has the GIL probes detached");
  const std::vector<PlannedProbe>& incoming = on ? gil_waits_ : gil_full_;
  volatile uint8_t* incoming_off =
      on ? &skel_->bss->budget_gil_waits_off : &skel_->bss->budget_gil_full_off;
  volatile uint8_t* outgoing_off =
      on ? &skel_->bss->budget_gil_full_off : &skel_->bss->budget_gil_waits_off;
  // Silent until the switch: both groups are attached for as long as the attach takes.
  *incoming_off = 1;
  std::vector<Link> kept = std::move(links_);
  links_.clear();
  std::string failed;
  for (const auto& probe : incoming) {
    ProbeAttachResult r;
    r.id = probe.id;
    Status s = AttachUprobes(probe, &r);
    if (!s.ok() || !r.attached) {
      failed = std::string(probe.name()) + ": " + (s.ok() ? r.reason : s.ToString());
      break;
    }
  }
  std::vector<Link> added = std::move(links_);
  links_ = std::move(kept);
  if (!failed.empty()) {
    // All or nothing: half a set would report takes with no waits, or waits with no takes.
    CloseLinks(std::move(added));
    return UnavailableError("cannot attach the " + std::string(on ? "--gil waits" : "--gil full") +
                            " probes: " + failed);
  }
  // The switch: the outgoing group goes silent first, so for a few nanoseconds neither reports
  // and no take is ever reported by both.
  *outgoing_off = 1;
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  *incoming_off = 0;
  std::vector<Link> outgoing;
  std::vector<Link> stay;
  for (auto& link : links_) {
    bool out = on ? IsFullGilProbe(link.id)
                  : (link.id == ProbeId::kGilWait || link.id == ProbeId::kGilWaitReturn);
    (out ? outgoing : stay).push_back(link);
  }
  links_ = std::move(stay);
  links_.insert(links_.end(), added.begin(), added.end());
  size_t detached = outgoing.size();
  CloseLinks(std::move(outgoing));
  gil_waits_only_ = on;
  spdlog::info("pid {}: GIL probes switched to {} ({} links attached, {} detached)", options_.tgid,
               on ? "waits only" : "every take and drop", added.size(), detached);
  return OkStatus();
}

}  // namespace threadscope::loader

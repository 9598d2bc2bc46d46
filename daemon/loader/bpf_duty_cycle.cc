// The overhead budget's duty_cycle stage, while attached: the GIL and lock probes are detached
// for the off part of each period (no trap at all in the target: a detached uprobe costs
// nothing) and attached again for the on part. A part of BpfTracer of its own so the loader's
// attach code stays as it is.
#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>

#include "daemon/loader/bpf_tracer.h"

namespace threadscope::loader {

namespace {

// The probes a pause detaches: the GIL's and the locks' per-operation probes. What stays is
// rare and keeps identities right across the gap: thread lifecycle (tids, names, joins), lock
// creation and free (a lock made or freed in the gap is not mistaken for another at its
// address), and the free-threaded GIL enable/disable switches.
bool PausedByDutyCycle(ProbeId id) {
  switch (id) {
    case ProbeId::kLockNew:
    case ProbeId::kLockNewType:
    case ProbeId::kRLockNew:
    case ProbeId::kLockFree:
    case ProbeId::kRLockFree:
    case ProbeId::kSemDestroy:
    case ProbeId::kGilEnableTransient:
    case ProbeId::kGilEnablePermanent:
    case ProbeId::kGilDisable:
      return false;
    default:
      break;
  }
  Feature f = Spec(id).feature;
  return f == Feature::kLocks || f == Feature::kGil;
}

}  // namespace

void BpfTracer::KeepForDutyCycle(const ProbePlan& plan) {
  planned_.clear();
  for (const auto& probe : plan.probes) {
    if (probe.unavailable.empty() && PausedByDutyCycle(probe.id)) planned_.push_back(probe);
  }
  // The sites name the binaries by the inspection's descriptors (/proc/self/fd/N), which close
  // once the attach is done: open each binary again, now, and attach through our own.
  planned_binaries_ =
      std::shared_ptr<std::vector<int>>(new std::vector<int>, [](std::vector<int>* fds) {
        for (int fd : *fds) close(fd);
        delete fds;
      });
  std::map<std::string, std::string> reopened;
  for (auto& probe : planned_) {
    for (auto& site : probe.sites) {
      if (site.host_path.empty()) continue;
      auto it = reopened.find(site.host_path);
      if (it == reopened.end()) {
        int fd = open(site.host_path.c_str(), O_RDONLY | O_CLOEXEC);
        std::string path = site.host_path;
        if (fd >= 0) {
          planned_binaries_->push_back(fd);
          path = "/proc/self/fd/" + std::to_string(fd);
        } else {
          spdlog::warn("pid {}: cannot reopen {} for the duty cycle", options_.tgid,
                       site.host_path);
        }
        it = reopened.emplace(site.host_path, path).first;
      }
      site.host_path = it->second;
    }
  }
}

Status BpfTracer::SetTracingPaused(bool paused) {
  if (!skel_) return FailedPreconditionError("not loaded");
  if (paused == paused_) return OkStatus();
  auto t0 = std::chrono::steady_clock::now();
  if (paused) {
    std::vector<Link> outgoing;
    std::vector<Link> stay;
    paused_ids_.clear();
    for (auto& link : links_) {
      if (PausedByDutyCycle(link.id)) {
        outgoing.push_back(link);
        if (std::find(paused_ids_.begin(), paused_ids_.end(), link.id) == paused_ids_.end()) {
          paused_ids_.push_back(link.id);
        }
      } else {
        stay.push_back(link);
      }
    }
    links_ = std::move(stay);
    size_t n = outgoing.size();
    CloseLinks(std::move(outgoing));
    paused_ = true;
    spdlog::info(
        "pid {}: duty cycle: {} GIL/lock links detached in {} ms", options_.tgid, n,
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
            .count());
    return OkStatus();
  }
  // Resume: the same probes again (the GIL group attached at the pause, full or waits).
  auto find = [&](ProbeId id) -> const PlannedProbe* {
    for (const auto* group : {&planned_, &gil_waits_}) {
      for (const auto& p : *group) {
        if (p.id == id && p.unavailable.empty()) return &p;
      }
    }
    return nullptr;
  };
  std::vector<Link> kept = std::move(links_);
  links_.clear();
  std::string failed;
  for (ProbeId id : paused_ids_) {
    const PlannedProbe* probe = find(id);
    if (!probe) continue;
    if (probe->kind == ProbeKind::kRawTracepoint) {
      auto link = AttachSite(*probe, nullptr);
      if (!link.ok()) {
        failed = std::string(probe->name()) + ": " + link.status().ToString();
        break;
      }
      links_.push_back(*link);
      continue;
    }
    ProbeAttachResult r;
    r.id = id;
    Status s = AttachUprobes(*probe, &r);
    if (!s.ok() || !r.attached) {
      failed = std::string(probe->name()) + ": " + (s.ok() ? r.reason : s.ToString());
      break;
    }
  }
  std::vector<Link> added = std::move(links_);
  links_ = std::move(kept);
  if (!failed.empty()) {
    // All or nothing: half the lock probes would report acquires with no releases.
    CloseLinks(std::move(added));
    return UnavailableError("cannot attach the paused probes again: " + failed);
  }
  size_t n = added.size();
  links_.insert(links_.end(), added.begin(), added.end());
  paused_ = false;
  paused_ids_.clear();
  spdlog::info(
      "pid {}: duty cycle: {} GIL/lock links attached again in {} ms", options_.tgid, n,
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count());
  return OkStatus();
}

}  // namespace threadscope::loader

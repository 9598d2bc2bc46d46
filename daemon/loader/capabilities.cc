#include "daemon/loader/capabilities.h"

namespace threadscope::loader {

namespace {

bool Placed(const PlannedProbe& p) {
  return p.unavailable.empty() && (p.kind == ProbeKind::kRawTracepoint || !p.sites.empty());
}

class Outcome {
 public:
  Outcome(const ProbePlan& plan, const std::vector<ProbeAttachResult>& results)
      : plan_(plan), results_(results) {}

  bool Attached(size_t i) const { return i < results_.size() && results_[i].attached; }

  // Every planned probe feeding `c` was placed and attached, and there is at least one.
  // `why` gets the first missing one's reason.
  bool All(Capability c, std::string* why = nullptr) const {
    bool any = false;
    for (size_t i = 0; i < plan_.probes.size(); ++i) {
      const PlannedProbe& p = plan_.probes[i];
      if (!Has(p.feeds, c)) continue;
      any = true;
      if (!Attached(i)) {
        if (why) *why = Reason(i);
        return false;
      }
    }
    if (!any && why) *why = std::string("no probe for ") + CapabilityName(c) + " was planned";
    return any;
  }

  // The first probe feeding `c` that was placed but did not attach, if any.
  std::optional<size_t> FailedPlaced(Capability c) const {
    for (size_t i = 0; i < plan_.probes.size(); ++i) {
      const PlannedProbe& p = plan_.probes[i];
      if (Has(p.feeds, c) && Placed(p) && !Attached(i)) return i;
    }
    return std::nullopt;
  }

  // Some probe feeding `c` was placed and attached.
  bool Any(Capability c) const {
    for (size_t i = 0; i < plan_.probes.size(); ++i) {
      if (Has(plan_.probes[i].feeds, c) && Attached(i)) return true;
    }
    return false;
  }

  bool Ok(ProbeId id) const {
    for (size_t i = 0; i < plan_.probes.size(); ++i) {
      if (plan_.probes[i].id == id && Attached(i)) return true;
    }
    return false;
  }

  std::string Reason(size_t i) const {
    const PlannedProbe& p = plan_.probes[i];
    std::string why = !p.unavailable.empty()                      ? p.unavailable
                      : i < results_.size() && !results_[i].reason.empty() ? results_[i].reason
                                                                   : "not attached";
    return std::string(p.name()) + ": " + why;
  }

 private:
  const ProbePlan& plan_;
  const std::vector<ProbeAttachResult>& results_;
};

}  // namespace

ModelCapabilities DeriveCapabilities(const ProbePlan& plan,
                                     const std::vector<ProbeAttachResult>& results) {
  Outcome o(plan, results);
  ModelCapabilities out;

  // Joins: exact where PyThread_join_thread is probed (3.13+); 3.4-3.12 see the joins that had
  // to wait, through the sentinel and the semaphore waits. Either way every probe that feeds
  // joins on this build must be there, and nothing else matters (3.13+ joins need no
  // semaphore probe).
  if (o.All(Capability::kJoins)) {
    out.threads.joins = o.Ok(ProbeId::kThreadJoin) ? model::JoinVisibility::kExact
                                                   : model::JoinVisibility::kBlockingOnly;
  }
  out.threads.body_done_visible = o.All(Capability::kBodyDone);

  // The GIL: the plan says what this build lets us see; a placed probe that the kernel refused
  // takes away what it feeds.
  out.gil = plan.gil;
  if (out.gil.traced) {
    for (Capability c : {Capability::kGilTake, Capability::kGilDrop}) {
      if (auto failed = o.FailedPlaced(c)) {
        out.gil.traced = false;
        out.gil.unavailable = "probe " + std::string(plan.probes[*failed].name()) +
                              " could not be attached: " +
                              (*failed < results.size() ? results[*failed].reason : "");
        break;
      }
    }
  }
  if (out.gil.traced && out.gil.forced_known && !o.Any(Capability::kGilForced)) {
    out.gil.forced_known = false;
    out.gil.notes += std::string(out.gil.notes.empty() ? "" : "; ") +
                     "no forced-switch probe attached: forced and voluntary drops are not told "
                     "apart";
  }

  LockCapabilities& l = out.locks;
  l.waits = o.All(Capability::kLockWaits, &l.reason);
  if (l.waits) l.reason.clear();
  l.wakers = o.All(Capability::kLockWakers);
  l.creation = o.All(Capability::kLockCreation);
  l.frees = o.All(Capability::kLockFrees);
  l.acquire_release = o.All(Capability::kLockAcquireRelease);
  l.contention = o.All(Capability::kContention);
  return out;
}

ModelCapabilities PlannedCapabilities(const ProbePlan& plan) {
  std::vector<ProbeAttachResult> results;
  for (const auto& p : plan.probes) {
    ProbeAttachResult r;
    r.id = p.id;
    r.attached = Placed(p);
    r.sites_attached = r.attached ? p.sites.size() : 0;
    results.push_back(std::move(r));
  }
  return DeriveCapabilities(plan, results);
}

}  // namespace threadscope::loader

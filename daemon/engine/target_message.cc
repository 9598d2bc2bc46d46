#include "daemon/engine/target_message.h"

#include "daemon/common/text.h"
#include "daemon/engine/snapshot_builder.h"
#include "daemon/loader/capabilities.h"
#include "daemon/model/event_decoder.h"

namespace threadscope::engine {

v1::Probe ProbeToProto(const loader::PlannedProbe& planned,
                       const loader::ProbeAttachResult& result) {
  v1::Probe p;
  p.set_name(std::string(planned.name()));
  p.set_attached(result.attached);
  p.set_reason(ToValidUtf8(result.reason));
  p.set_purpose(ToValidUtf8(planned.purpose));
  p.set_kind(loader::ProbeKindName(planned.kind));
  p.set_required(planned.required());
  for (const auto& feed : loader::CapabilityNames(planned.feeds)) p.add_feeds(feed);
  p.set_feature(loader::FeatureName(planned.spec().feature));
  for (const auto& site : planned.sites) {
    auto* s = p.add_sites();
    s->set_binary(ToValidUtf8(site.binary));
    s->set_file_offset(site.file_offset);
    s->set_location(ToValidUtf8(site.location));
    s->set_resolved_by(ToValidUtf8(site.resolved_by));
    s->set_instruction(ToValidUtf8(site.instruction));
    s->set_execution(target::UprobeSiteKindName(site.site_kind));
  }
  return p;
}

v1::Target BuildTarget(const target::PythonProcess& info, const loader::ProbePlan& plan,
                       const std::vector<loader::ProbeAttachResult>& results,
                       const TargetFacts& facts) {
  v1::Target t;
  t.set_pid(facts.pid);
  t.set_ns_pid(info.ns_pid);
  t.set_executable(ToValidUtf8(info.executable));
  t.set_command_line(ToValidUtf8(info.command_line));
  t.set_interpreter(ToValidUtf8(info.interpreter.path));
  t.set_python_version(info.version.ToString());
  t.set_symbols(info.full_symbols ? v1::SYMBOL_LEVEL_FULL : v1::SYMBOL_LEVEL_DYNAMIC_ONLY);
  t.set_free_threaded(info.free_threaded);
  t.set_other_mount_namespace(info.other_mount_namespace);
  t.set_state(v1::TARGET_STATE_ATTACHED);
  t.set_attached_ns(facts.attached_ns);
  t.set_realtime_offset_ns(facts.realtime_offset_ns);
  t.set_kernel_release(facts.kernel_release);
  // 2.7 has no lock tracing (the plan says why): its target reports "off".
  t.set_lock_mode(plan.trace_all_sems ? loader::LockModeName(plan.locks) : "off");
  t.set_lock_threshold_ns(facts.settings.lock_threshold_ns);
  v1::PythonStacks* stacks = t.mutable_python_stacks();
  stacks->set_enabled(plan.stacks.has_value());
  if (plan.stacks) {
    stacks->set_layout_source(plan.stacks->layout.source);
    stacks->set_frames(plan.stack_frames);
    stacks->set_frames_acquire(plan.stack_frames_acquire);
    // GIL waits by stack, as loaded (0 frames: off, or not possible on this target).
    if (plan.gil_stack_frames) {
      stacks->set_frames_gil(plan.gil_stack_frames);
      stacks->set_gil_threshold_ns(plan.gil_stack_threshold_ns);
    }
  } else {
    stacks->set_reason(ToValidUtf8(plan.stacks_unavailable));
  }
  for (const auto& [k, v] : facts.settings.labels) (*t.mutable_labels())[k] = v;
  for (size_t i = 0; i < plan.probes.size(); ++i) {
    loader::ProbeAttachResult missing;  // a result short of the plan: shown, never dropped
    missing.id = plan.probes[i].id;
    missing.reason = "not attempted";
    *t.add_probes() = ProbeToProto(plan.probes[i], i < results.size() ? results[i] : missing);
  }
  // What the model can know: what the plan placed, less what the kernel refused.
  const loader::ModelCapabilities can = loader::DeriveCapabilities(plan, results);
  v1::GilTracing* gil = t.mutable_gil();
  gil->set_enabled(can.gil.traced);
  gil->set_reason(ToValidUtf8(can.gil.unavailable));
  gil->set_take_functions(static_cast<uint32_t>(can.gil.take_functions));
  gil->set_drop_functions(static_cast<uint32_t>(can.gil.drop_functions));
  gil->set_inlined_drops(static_cast<uint32_t>(can.gil.inlined_drops));
  gil->set_drops_complete(can.gil.drops_complete);
  gil->set_forced_known(can.gil.forced_known);
  gil->set_notes(ToValidUtf8(can.gil.notes));
  gil->set_mode(can.gil.mode == loader::GilMode::kWaits ? v1::GIL_MODE_WAITS : v1::GIL_MODE_FULL);
  t.set_join_visibility(ToProto(can.threads.joins));
  t.set_body_done_visible(can.threads.body_done_visible);
  return t;
}

}  // namespace threadscope::engine

// Prints the probe plan for interpreter binaries as a Markdown table: what docs/PROBES.md shows.
//   bazel run //tools:probe_table -- /usr/bin/python3.11 ~/.pyenv/versions/*/bin/python3.?
#include <cstdio>
#include <string>

#include "daemon/loader/probe_plan.h"

using namespace threadscope;

int main(int argc, char** argv) {
  auto dis = target::Disassembler::Create();
  if (!dis.ok()) return 1;
  std::printf("| interpreter | symbols | probe | kind | where (first site) | execution | sites |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (int i = 1; i < argc; ++i) {
    auto t = target::InspectPythonBinary(**dis, argv[i]);
    if (!t.ok()) {
      std::fprintf(stderr, "%s: %s\n", argv[i], t.status().ToString().c_str());
      continue;
    }
    std::string label = "CPython " + t->info.version.ToString();
    std::string symbols = t->info.full_symbols ? "full" : "dynamic-only";
    loader::PlanOptions options;
    options.locks = loader::LockMode::kAll;  // the largest probe set
    for (const auto& p : loader::PlanProbes(*t, **dis, options).probes) {
      std::string where, execution;
      if (!p.unavailable.empty()) {
        where = "**not placed**: " + p.unavailable;
      } else if (p.kind == loader::ProbeKind::kRawTracepoint) {
        where = "kernel `" + p.tracepoint + "`";
        execution = "-";
      } else {
        where = "`" + p.sites[0].location + "` (" + p.sites[0].resolved_by + ")";
        execution = target::UprobeSiteKindName(p.sites[0].site_kind);
      }
      std::printf("| %s | %s | %s | %s | %s | %s | %zu |\n", label.c_str(), symbols.c_str(),
                  p.name.c_str(), loader::ProbeKindName(p.kind), where.c_str(),
                  execution.c_str(), p.kind == loader::ProbeKind::kRawTracepoint ? 1 : p.sites.size());
    }
  }
  return 0;
}

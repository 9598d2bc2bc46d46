// docs/PROBES.md, generated: the probe catalogue (daemon/loader/probe_catalog.h) and the real
// planner's output for each interpreter. `bazel run //tools:probe_table -- --markdown` writes
// it; tests/unit/probe_docs_test.cc fails when the committed file differs.
#pragma once

#include <string>
#include <vector>

#include "daemon/target/disasm.h"

namespace threadscope::docs {

struct DocInterpreter {
  std::string label;   // "debian-unstable-3.14": the section's name
  std::string binary;  // the interpreter binary, as this process opens it
};

// Everything before the per-interpreter sections: the introduction, the catalogue table and
// the reasons behind the sites. Pure: depends on the catalogue alone.
std::string CatalogueMarkdown();

// One interpreter's section: "### label" and its planned probes for --locks all and the GIL
// on, with what the plan lets the model know.
std::string InterpreterMarkdown(const DocInterpreter& in, const target::Disassembler& dis);

// The whole file.
std::string ProbesMarkdown(const std::vector<DocInterpreter>& interpreters,
                           const target::Disassembler& dis);

// The heading that starts an interpreter's section.
std::string SectionHeading(const std::string& label);

}  // namespace threadscope::docs

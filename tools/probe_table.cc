// The probe plan for interpreter binaries, as Markdown.
//   bazel run //tools:probe_table -- /usr/bin/python3.11 [LABEL=]PATH...   one table each
//   bazel run //tools:probe_table -- --markdown > docs/PROBES.md           the whole file
// --markdown without paths covers the interpreters of the test matrix (tests/interpreters.json;
// every one must be on the machine, the Debian unstable root built); with paths, those.
#include <cstdio>
#include <string>
#include <vector>

#include "tests/unit/interpreters.h"
#include "tools/probe_docs.h"

using namespace threadscope;

int main(int argc, char** argv) {
  auto dis = target::Disassembler::Create();
  if (!dis.ok()) return 1;
  bool markdown = false;
  std::vector<docs::DocInterpreter> interpreters;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--markdown") {
      markdown = true;
      continue;
    }
    auto eq = arg.find('=');
    if (eq == std::string::npos) {
      interpreters.push_back({arg, arg});
    } else {
      interpreters.push_back({arg.substr(0, eq), arg.substr(eq + 1)});
    }
  }
  if (markdown && interpreters.empty()) {
    auto matrix = interpreters::Load();
    if (!matrix.ok()) {
      std::fprintf(stderr, "%s\n", matrix.status().ToString().c_str());
      return 1;
    }
    for (const auto& in : *matrix) {
      if (in.kind == "extra") continue;  // THREADSCOPE_EXTRA_PYTHONS: not in the committed file
      if (!in.present()) {
        std::fprintf(stderr, "%s: %s; docs/PROBES.md covers it\n", in.label.c_str(),
                     in.missing.c_str());
        return 1;
      }
      interpreters.push_back({in.label, in.binary});
    }
  }
  std::string out;
  if (markdown) {
    out = docs::ProbesMarkdown(interpreters, **dis);
  } else {
    for (const auto& in : interpreters) out += docs::InterpreterMarkdown(in, **dis);
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

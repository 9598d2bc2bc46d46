// The probe plan for interpreter binaries, as Markdown.
//   bazel run //tools:probe_table -- /usr/bin/python3.11 [LABEL=]PATH...   one table each
//   bazel run //tools:probe_table -- --markdown > docs/PROBES.md           the whole file
// --markdown without paths covers the interpreters docs/PROBES.md covers (all of them must be
// on the machine); with paths, those.
#include <cstdio>
#include <string>
#include <vector>

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
    for (const auto& d : docs::DefaultDocInterpreters()) {
      if (!d.present) {
        std::fprintf(stderr, "%s is missing (%s): docs/PROBES.md covers it\n",
                     d.doc.label.c_str(), d.doc.binary.c_str());
        return 1;
      }
      interpreters.push_back(d.doc);
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

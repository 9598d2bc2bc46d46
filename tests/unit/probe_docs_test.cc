// docs/PROBES.md is what `bazel run //tools:probe_table -- --markdown` writes: the catalogue
// part always, and a section per interpreter of the test matrix (tests/interpreters.json) this
// machine has; an absent optional one keeps its committed section (named on stderr), an absent
// required one fails.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>

#include "tests/unit/interpreters.h"
#include "tools/probe_docs.h"

namespace threadscope::docs {
namespace {

constexpr char kRegenerate[] =
    "docs/PROBES.md is stale: bazel run //tools:probe_table -- --markdown > docs/PROBES.md";

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The committed file's interpreter sections, by label.
std::map<std::string, std::string> Sections(const std::string& text, size_t from) {
  std::map<std::string, std::string> out;
  const std::string marker = "\n" + SectionHeading("");
  size_t at = text.find(marker, from);
  while (at != std::string::npos) {
    size_t label_end = text.find('\n', at + marker.size());
    std::string label = text.substr(at + marker.size(), label_end - at - marker.size());
    size_t next = text.find(marker, label_end);
    out[label] = text.substr(at, next == std::string::npos ? std::string::npos : next - at);
    at = next;
  }
  return out;
}

TEST(ProbeDocsTest, CommittedFileIsWhatTheGeneratorWrites) {
  std::string committed = Read("docs/PROBES.md");
  ASSERT_FALSE(committed.empty()) << "docs/PROBES.md is not readable";
  std::string catalogue = CatalogueMarkdown();
  ASSERT_EQ(committed.substr(0, catalogue.size()), catalogue) << kRegenerate;

  auto dis = target::Disassembler::Create();
  ASSERT_TRUE(dis.ok());
  auto sections = Sections(committed, catalogue.size() - 1);
  std::string expected = catalogue;
  auto matrix = interpreters::Load();
  ASSERT_TRUE(matrix.ok()) << matrix.status().ToString();
  for (const auto& in : *matrix) {
    if (in.kind == "extra") continue;
    if (in.present()) {
      expected += InterpreterMarkdown({in.label, in.binary}, **dis);
      continue;
    }
    ASSERT_FALSE(in.required) << in.label << " is required: " << in.missing;
    std::fprintf(stderr, "%s (its committed section is kept)\n", in.SkipLine().c_str());
    auto it = sections.find(in.label);
    ASSERT_NE(it, sections.end()) << "docs/PROBES.md has no section for " << in.label;
    expected += it->second;
  }
  EXPECT_EQ(committed, expected) << kRegenerate;
}

}  // namespace
}  // namespace threadscope::docs

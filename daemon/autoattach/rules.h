// Auto-attach rules: which processes threadscoped traces without being asked, and how.
//
// A rule is `KEY=PATTERN[,KEY=PATTERN...]`; every key given must match:
//   exe      glob over the executable's path as the process sees it (/proc/PID/exe)
//   cmdline  regular expression (ECMAScript, no back-references) searched in the command line,
//            argv joined by spaces (its first 4 KiB)
//   cgroup   glob over the process's cgroup path (a container, a Kubernetes pod, a unit)
//   user     the effective user: a name (resolved when the rule is parsed) or a uid
//
// Everything a rule is matched against comes from the process, which may be hostile: the inputs
// are capped (kMaxMatchedBytes) and neither matcher can be made to run long or recurse. Globs
// run in O(pattern x text) with one backtracking point; regular expressions run on libstdc++'s
// polynomial executor (breadth-first: linear in the text, no per-character recursion, which its
// default executor has and a long command line would turn into a stack overflow), on at most
// 4 KiB of the command line, with patterns of at most 512 bytes.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/common/status.h"
#include "threadscope/v1/threadscope.pb.h"

#include <regex>

namespace threadscope::autoattach {

// What a rule sees of a process is cut at this many bytes (a command line can be megabytes).
inline constexpr size_t kMaxMatchedBytes = 64 << 10;

// Shell-style glob: `*` any run of characters ('/' included: `*/python3*` matches
// /usr/bin/python3.11), `?` one character, `[abc]`, `[a-z]`, `[!abc]` a class, `\x` a literal.
class Glob {
 public:
  static StatusOr<Glob> Compile(std::string_view pattern);
  bool Matches(std::string_view text) const;
  const std::string& pattern() const { return pattern_; }

 private:
  struct Token {
    enum Kind { kLiteral, kAny, kStar, kClass } kind = kLiteral;
    char literal = 0;
    bool negated = false;
    std::vector<std::pair<unsigned char, unsigned char>> ranges;
    bool Accepts(unsigned char c) const;
  };
  std::string pattern_;
  std::vector<Token> tokens_;
};

// A process as rules see it. Strings are at most kMaxMatchedBytes.
struct ProcessFacts {
  std::string exe;      // without the kernel's " (deleted)"
  std::string cmdline;  // argv joined by spaces
  std::string cgroup;   // SelectCgroupPath (cgroup.h)
  uid_t uid = 0;        // effective uid, as the daemon's user namespace sees it
};

// The keys of one rule. Copyable (the compiled regex is shared and immutable).
class Matcher {
 public:
  // "exe=*/python3*,cmdline=gunicorn" -> Matcher. A pattern may contain commas, except one
  // followed by a key and '=' (",user="), which starts the next key.
  static StatusOr<Matcher> Parse(std::string_view text);
  // One key at a time (the config file gives them as a map).
  Status Add(std::string_view key, std::string_view pattern);
  // Adds another matcher's keys (a config rule's several match lines); a key twice is an error.
  Status Merge(const Matcher& other);
  bool empty() const { return !exe_ && !cmdline_ && !cgroup_ && !user_; }
  bool Matches(const ProcessFacts& facts) const;
  // Canonical text: keys in a fixed order, as Parse accepts.
  std::string ToString() const;
  bool needs_cmdline() const { return cmdline_ != nullptr; }
  bool needs_cgroup() const { return cgroup_.has_value(); }

 private:
  std::optional<Glob> exe_;
  std::shared_ptr<const std::regex> cmdline_;
  std::string cmdline_text_;
  std::optional<Glob> cgroup_;
  std::optional<uid_t> user_;
  std::string user_text_;
};

// A rule with what it attaches with: AttachOptions (labels included) and a name for metrics and
// status ([a-zA-Z0-9_.-], at most 64 bytes).
// Auto-attached targets are traced under this overhead budget unless their rule says otherwise
// (overhead-budget = 0.5% | off): nobody watches a fleet's targets attach, so what tracing may
// cost is bounded by default (docs/PERFORMANCE.md, "Overhead budget").
inline constexpr char kDefaultRuleOverheadBudget[] = "1%";

struct Rule {
  Rule() { options.set_overhead_budget(kDefaultRuleOverheadBudget); }
  std::string name;
  Matcher match;
  v1::AttachOptions options;
};

// "root", "1000" -> uid; NotFound for an unknown name.
StatusOr<uid_t> ResolveUser(std::string_view user);
bool IsRuleName(std::string_view name);

// Labels a rule may set at most: the daemon adds up to 4 of its own from the cgroup
// (cgroup.h), and a target has at most 16.
inline constexpr size_t kMaxRuleLabels = 12;

}  // namespace threadscope::autoattach

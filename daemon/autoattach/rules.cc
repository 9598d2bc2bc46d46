#include "daemon/autoattach/rules.h"

#include <pwd.h>
#include <unistd.h>

#include <array>
#include <cstdlib>
#include <regex>

namespace threadscope::autoattach {

namespace {

constexpr std::array<std::string_view, 4> kKeys = {"exe", "cmdline", "cgroup", "user"};

// Operators write patterns; a pattern too long to be one is a mistake (or a pasted file).
constexpr size_t kMaxPatternBytes = 4096;
// A regular expression is matched against at most this much of a command line, and may be at
// most kMaxRegexBytes: with libstdc++'s polynomial (Thompson) executor the cost is at most
// text x automaton states, both bounded here.
constexpr size_t kMaxRegexBytes = 512;
constexpr size_t kMaxRegexText = 4096;

std::string Quoted(std::string_view s) {
  std::string out(s.substr(0, 64));
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
  }
  return "'" + out + (s.size() > 64 ? "...'" : "'");
}

}  // namespace

bool Glob::Token::Accepts(unsigned char c) const {
  switch (kind) {
    case kLiteral: return static_cast<unsigned char>(literal) == c;
    case kAny: return true;
    case kStar: return false;
    case kClass: {
      bool in = false;
      for (const auto& [lo, hi] : ranges) in |= c >= lo && c <= hi;
      return in != negated;
    }
  }
  return false;
}

StatusOr<Glob> Glob::Compile(std::string_view pattern) {
  if (pattern.size() > kMaxPatternBytes) {
    return InvalidArgumentError("glob is longer than " + std::to_string(kMaxPatternBytes) +
                                " bytes");
  }
  Glob g;
  g.pattern_ = std::string(pattern);
  for (size_t i = 0; i < pattern.size(); ++i) {
    Token t;
    char c = pattern[i];
    if (c == '*') {
      // Consecutive stars are one.
      if (!g.tokens_.empty() && g.tokens_.back().kind == Token::kStar) continue;
      t.kind = Token::kStar;
    } else if (c == '?') {
      t.kind = Token::kAny;
    } else if (c == '\\') {
      if (i + 1 == pattern.size()) {
        return InvalidArgumentError("glob " + Quoted(pattern) + " ends with a lone '\\'");
      }
      t.literal = pattern[++i];
    } else if (c == '[') {
      t.kind = Token::kClass;
      size_t j = i + 1;
      if (j < pattern.size() && (pattern[j] == '!' || pattern[j] == '^')) {
        t.negated = true;
        ++j;
      }
      bool first = true;
      for (; j < pattern.size() && (pattern[j] != ']' || first); ++j, first = false) {
        unsigned char lo = static_cast<unsigned char>(pattern[j]);
        unsigned char hi = lo;
        if (j + 2 < pattern.size() && pattern[j + 1] == '-' && pattern[j + 2] != ']') {
          hi = static_cast<unsigned char>(pattern[j + 2]);
          j += 2;
          if (hi < lo) {
            return InvalidArgumentError("glob " + Quoted(pattern) + " has a reversed range");
          }
        }
        t.ranges.push_back({lo, hi});
      }
      if (j >= pattern.size()) {
        return InvalidArgumentError("glob " + Quoted(pattern) + " has an unclosed '['");
      }
      i = j;
    } else {
      t.literal = c;
    }
    g.tokens_.push_back(std::move(t));
  }
  return g;
}

bool Glob::Matches(std::string_view text) const {
  // Greedy with one backtracking point (the last star): a star can absorb any text, so only
  // the last one ever needs to give characters back. O(tokens x text) at worst.
  text = text.substr(0, kMaxMatchedBytes);
  size_t t = 0, p = 0, star = std::string::npos, mark = 0;
  const size_t n = tokens_.size();
  while (t < text.size()) {
    unsigned char c = static_cast<unsigned char>(text[t]);
    if (p < n && tokens_[p].kind == Token::kStar) {
      star = p++;
      mark = t;
    } else if (p < n && tokens_[p].Accepts(c)) {
      ++p;
      ++t;
    } else if (star != std::string::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < n && tokens_[p].kind == Token::kStar) ++p;
  return p == n;
}

StatusOr<uid_t> ResolveUser(std::string_view user) {
  if (user.empty()) return InvalidArgumentError("user is empty");
  if (user.find_first_not_of("0123456789") == std::string_view::npos) {
    if (user.size() > 10) return InvalidArgumentError("uid " + Quoted(user) + " is too large");
    unsigned long v = std::strtoul(std::string(user).c_str(), nullptr, 10);
    if (v > 0xfffffffeul) return InvalidArgumentError("uid " + Quoted(user) + " is too large");
    return static_cast<uid_t>(v);
  }
  std::string name(user.substr(0, 256));
  passwd pw;
  passwd* found = nullptr;
  std::vector<char> buf(16384);
  if (getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || !found) {
    return NotFoundError("no user " + Quoted(user) + " here (give a uid instead)");
  }
  return found->pw_uid;
}

bool IsRuleName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

Status Matcher::Add(std::string_view key, std::string_view pattern) {
  if (pattern.size() > kMaxPatternBytes) {
    return InvalidArgumentError(std::string(key) + ": the pattern is longer than " +
                                std::to_string(kMaxPatternBytes) + " bytes");
  }
  auto dup = [&] { return InvalidArgumentError(std::string(key) + " is given twice"); };
  if (key == "exe" || key == "cgroup") {
    auto& slot = key == "exe" ? exe_ : cgroup_;
    if (slot) return dup();
    if (pattern.empty()) return InvalidArgumentError(std::string(key) + ": empty pattern");
    auto g = Glob::Compile(pattern);
    if (!g.ok()) return InvalidArgumentError(std::string(key) + ": " + g.status().message());
    slot = std::move(*g);
    return OkStatus();
  }
  if (key == "cmdline") {
    if (cmdline_) return dup();
    if (pattern.empty()) return InvalidArgumentError("cmdline: empty pattern");
    if (pattern.size() > kMaxRegexBytes) {
      return InvalidArgumentError("cmdline: the pattern is longer than " +
                                  std::to_string(kMaxRegexBytes) + " bytes");
    }
    std::shared_ptr<const std::regex> re;
    try {
      // __polynomial: libstdc++'s breadth-first executor, linear in the text and without the
      // per-character recursion of its default one (a long command line would overflow the
      // stack); it refuses back-references, which we do not need.
      re = std::make_shared<const std::regex>(
          std::string(pattern), std::regex_constants::ECMAScript | std::regex_constants::nosubs |
                                    std::regex_constants::__polynomial);
    } catch (const std::regex_error& e) {
      return InvalidArgumentError("cmdline: " + Quoted(pattern) +
                                  " is not a regular expression (ECMAScript, no back-references): " +
                                  e.what());
    }
    cmdline_ = std::move(re);
    cmdline_text_ = std::string(pattern);
    return OkStatus();
  }
  if (key == "user") {
    if (user_) return dup();
    auto uid = ResolveUser(pattern);
    if (!uid.ok()) return InvalidArgumentError("user: " + uid.status().message());
    user_ = *uid;
    user_text_ = std::string(pattern);
    return OkStatus();
  }
  return InvalidArgumentError("unknown key " + Quoted(key) +
                              " (keys: exe, cmdline, cgroup, user)");
}

StatusOr<Matcher> Matcher::Parse(std::string_view text) {
  Matcher m;
  if (text.empty()) return InvalidArgumentError("empty rule (KEY=PATTERN[,KEY=PATTERN...])");
  // Split at commas that start a key: ",exe=", ",cmdline=", ",cgroup=", ",user=".
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != ',') continue;
    std::string_view rest = text.substr(i + 1);
    for (auto k : kKeys) {
      if (rest.size() > k.size() && rest.substr(0, k.size()) == k && rest[k.size()] == '=') {
        parts.push_back(text.substr(start, i - start));
        start = i + 1;
        break;
      }
    }
  }
  parts.push_back(text.substr(start));
  for (auto part : parts) {
    auto eq = part.find('=');
    if (eq == std::string_view::npos) {
      return InvalidArgumentError(Quoted(part) + " is not KEY=PATTERN (keys: exe, cmdline, "
                                                 "cgroup, user)");
    }
    TS_RETURN_IF_ERROR(m.Add(part.substr(0, eq), part.substr(eq + 1)));
  }
  return m;
}

bool Matcher::Matches(const ProcessFacts& f) const {
  if (user_ && f.uid != *user_) return false;
  if (exe_ && !exe_->Matches(f.exe)) return false;
  if (cgroup_ && !cgroup_->Matches(f.cgroup)) return false;
  if (cmdline_) {
    std::string_view cmd(f.cmdline);
    cmd = cmd.substr(0, kMaxRegexText);
    try {
      if (!std::regex_search(cmd.begin(), cmd.end(), *cmdline_)) return false;
    } catch (const std::regex_error&) {
      return false;  // the executor gave up (complexity): no match, never a crash
    }
  }
  return true;
}

Status Matcher::Merge(const Matcher& other) {
  auto dup = [](const char* key) { return InvalidArgumentError(std::string(key) + " is given twice"); };
  if (other.exe_) {
    if (exe_) return dup("exe");
    exe_ = other.exe_;
  }
  if (other.cmdline_) {
    if (cmdline_) return dup("cmdline");
    cmdline_ = other.cmdline_;
    cmdline_text_ = other.cmdline_text_;
  }
  if (other.cgroup_) {
    if (cgroup_) return dup("cgroup");
    cgroup_ = other.cgroup_;
  }
  if (other.user_) {
    if (user_) return dup("user");
    user_ = other.user_;
    user_text_ = other.user_text_;
  }
  return OkStatus();
}

std::string Matcher::ToString() const {
  std::string out;
  auto add = [&](const char* key, const std::string& v) {
    if (!out.empty()) out += ",";
    out += key;
    out += "=";
    out += v;
  };
  if (exe_) add("exe", exe_->pattern());
  if (cmdline_) add("cmdline", cmdline_text_);
  if (cgroup_) add("cgroup", cgroup_->pattern());
  if (user_) add("user", user_text_);
  return out;
}

}  // namespace threadscope::autoattach

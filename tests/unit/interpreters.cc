#include "tests/unit/interpreters.h"

#include <pwd.h>
#include <unistd.h>

#include <cstdio>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <regex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

namespace threadscope::interpreters {
namespace {

constexpr char kRootStamp[] = "/.threadscope-root";

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string PyenvRoot() {
  if (std::string r = Env("PYENV_ROOT"); !r.empty()) return r;
  // Bazel runs tests without HOME: ask the password database, as tests/interpreters.py does.
  if (const passwd* pw = getpwuid(getuid()); pw && pw->pw_dir) {
    return std::string(pw->pw_dir) + "/.pyenv";
  }
  return "/root/.pyenv";
}

bool Executable(const std::string& path) { return access(path.c_str(), X_OK) == 0; }
bool Exists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

std::string Absolute(const std::string& path) {
  if (!path.empty() && path[0] == '/') return path;
  char* real = realpath(path.c_str(), nullptr);
  if (!real) return path;
  std::string out(real);
  std::free(real);
  return out;
}

std::string Basename(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The label tests/interpreters.py gives an unlabelled extra: extra-<file name>, or more of its
// path while that is taken.
std::string ExtraLabel(const std::string& path, const std::set<std::string>& taken) {
  std::vector<std::string> parts;
  std::stringstream ss(path);
  for (std::string p; std::getline(ss, p, '/');) {
    if (!p.empty()) parts.push_back(p);
  }
  std::string label = "extra-" + Basename(path);
  for (size_t n = 2; taken.count(label) && n <= parts.size(); ++n) {
    label = "extra";
    for (size_t i = parts.size() - n; i < parts.size(); ++i) label += "-" + parts[i];
  }
  for (char& c : label) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '+' &&
        c != '-') {
      c = '_';
    }
  }
  return label;
}

}  // namespace

StatusOr<std::vector<Interpreter>> Load(const std::string& matrix_file,
                                        const std::string& in_root) {
  std::ifstream f(matrix_file);
  if (!f) return NotFoundError("cannot read the interpreter matrix " + matrix_file);
  nlohmann::json matrix = nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
  if (matrix.is_discarded() || !matrix.contains("interpreters")) {
    return InvalidArgumentError(matrix_file + " is not an interpreter matrix");
  }
  std::string root = Env("THREADSCOPE_DEBIAN_UNSTABLE_ROOT");
  if (root.empty()) root = matrix.value("debian_unstable_root", "");
  std::vector<Interpreter> out;
  std::set<std::string> labels;
  for (const auto& e : matrix["interpreters"]) {
    Interpreter in;
    in.label = e.value("label", "");
    in.kind = e.value("kind", "");
    in.version = e.value("version", "");
    in.required = e.value("required", false);
    std::string path = e.value("path", "");
    if (in.kind == "system") {
      in.path = in.binary = path;
      in.argv = {path};
      if (!Executable(path)) in.missing = path + " is missing (tools/install-deps.sh installs it)";
    } else if (in.kind == "pyenv") {
      in.path = in.binary = PyenvRoot() + "/" + path;
      in.argv = {in.path};
      if (!Executable(in.path)) {
        in.missing = "pyenv CPython " + in.version + " is not installed at " + in.path;
      }
    } else if (in.kind == "debian-unstable") {
      in.path = path;
      in.root = root;
      in.binary = root + path;
      in.argv = {Absolute(in_root), root, path};
      if (!Exists(root + kRootStamp)) {
        in.missing = "the Debian unstable root " + root +
                     " is not built (tools/debian-unstable-root.sh builds it)";
      } else if (!Executable(in.binary)) {
        in.missing = root + " has no " + path + " (tools/debian-unstable-root.sh installs " +
                     e.value("package", path) + ")";
      }
    } else {
      return InvalidArgumentError(matrix_file + ": " + in.label + " has an unknown kind '" +
                                  in.kind + "'");
    }
    labels.insert(in.label);
    out.push_back(std::move(in));
  }

  static const std::regex kLabel("[A-Za-z0-9][A-Za-z0-9._+-]*");
  std::stringstream extras(Env("THREADSCOPE_EXTRA_PYTHONS"));
  for (std::string item; std::getline(extras, item, ':');) {
    if (item.empty()) continue;
    Interpreter in;
    in.kind = "extra";
    size_t eq = item.find('=');
    std::string path = eq == std::string::npos ? item : item.substr(eq + 1);
    in.label = eq == std::string::npos ? ExtraLabel(path, labels) : item.substr(0, eq);
    if (!std::regex_match(in.label, kLabel) || labels.count(in.label)) {
      return InvalidArgumentError("THREADSCOPE_EXTRA_PYTHONS: bad or repeated label '" +
                                  in.label + "' in '" + item + "'");
    }
    if (path.empty() || path[0] != '/') {
      return InvalidArgumentError("THREADSCOPE_EXTRA_PYTHONS: '" + path +
                                  "' is not an absolute path");
    }
    in.path = in.binary = path;
    in.argv = {path};
    if (!Executable(path)) {
      in.missing = "THREADSCOPE_EXTRA_PYTHONS names " + path + ", which is not an executable file";
    }
    labels.insert(in.label);
    out.push_back(std::move(in));
  }
  return out;
}

std::string CommandLine(const Interpreter& in, const std::vector<std::string>& args) {
  std::string cmd;
  auto add = [&cmd](const std::string& word) {
    if (!cmd.empty()) cmd += ' ';
    cmd += '\'';
    for (char c : word) {
      if (c == '\'') {
        cmd += "'\\''";
      } else {
        cmd += c;
      }
    }
    cmd += '\'';
  };
  for (const auto& w : in.argv) add(w);
  for (const auto& w : args) add(w);
  return cmd;
}

std::string SelfReportedVersion(const Interpreter& in) {
  std::string cmd =
      CommandLine(in, {"-c", "import platform; print(platform.python_version())"}) +
      " 2>/dev/null";
  std::unique_ptr<FILE, int (*)(FILE*)> p(popen(cmd.c_str(), "r"), pclose);
  char buf[64] = {};
  if (!p || !fgets(buf, sizeof(buf), p.get())) return "";
  std::string v(buf);
  while (!v.empty() && (v.back() == '\n' || v.back() == '\r')) v.pop_back();
  return v;
}

std::pair<int, int> MajorMinor(const std::string& version) {
  static const std::regex kVersion("^(\\d+)\\.(\\d+).*");
  std::smatch m;
  if (!std::regex_match(version, m, kVersion)) return {-1, -1};
  return {std::stoi(m[1]), std::stoi(m[2])};
}

}  // namespace threadscope::interpreters

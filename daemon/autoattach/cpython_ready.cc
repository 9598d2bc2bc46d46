#include "daemon/autoattach/cpython_ready.h"

#include <string_view>

#include "daemon/target/cpython.h"

namespace threadscope::autoattach {

namespace {

std::string_view Basename(std::string_view path) {
  auto slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

bool StartsWith(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// Map paths are the process's to choose; the name check (a std::regex) only sees short names
// that could be one ("libpython3.11.so.1.0").
bool IsLibpython(std::string_view base) {
  return base.size() <= 64 && StartsWith(base, "libpython") && target::IsLibpythonName(base);
}

}  // namespace

ExeKind ClassifyExecutable(const target::ElfFile& elf) {
  ExeKind kind;
  kind.defines_runtime = target::DefinesCPythonRuntime(elf);
  for (const auto& needed : elf.needed()) {
    if (IsLibpython(needed)) kind.needs_libpython = true;
  }
  return kind;
}

const char* ReadinessName(Readiness r) {
  switch (r) {
    case Readiness::kReady: return "ready";
    case Readiness::kWait: return "wait";
    case Readiness::kNotCPython: return "not CPython";
  }
  return "?";
}

Readiness CheckCPython(const ExeKind& kind, const std::vector<target::Mapping>& maps) {
  bool libpython = false, libc = false, loader = false;
  for (const auto& m : maps) {
    if (m.path.empty() || m.path[0] != '/') continue;  // [heap], [vdso], anonymous
    std::string_view base = Basename(m.path);
    if (IsLibpython(base)) libpython = true;
    // glibc's libc.so.6 (libc-2.x.so before 2.34); musl's ld-musl-*.so.1 is loader and libc.
    if (StartsWith(base, "libc.so") || StartsWith(base, "libc-")) libc = true;
    if (StartsWith(base, "ld-musl")) libc = loader = true;
    if (StartsWith(base, "ld-linux")) loader = true;
  }
  if (kind.needs_libpython) return libpython && libc ? Readiness::kReady : Readiness::kWait;
  if (kind.defines_runtime) {
    // Fully static: nothing more will be mapped. Dynamic: ld.so maps libc before main runs.
    return !loader || libc ? Readiness::kReady : Readiness::kWait;
  }
  if (libpython) return libc ? Readiness::kReady : Readiness::kWait;
  return Readiness::kNotCPython;
}

}  // namespace threadscope::autoattach

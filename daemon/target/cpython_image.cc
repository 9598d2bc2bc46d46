#include "daemon/target/cpython_image.h"

#include <regex>

namespace threadscope::target {

bool IsLibpythonName(std::string_view basename) {
  static const std::regex kRe(R"(^libpython[23]\.\d{1,2}[a-z]*\.so(\.[0-9.]+)?$)");
  return std::regex_match(basename.begin(), basename.end(), kRe);
}

bool DefinesCPythonRuntime(const ElfFile& elf) {
  for (const char* name : {"Py_Initialize", "PyEval_SaveThread", "Py_GetVersion"}) {
    auto sym = elf.FindSymbol(name);
    if (!sym || !sym->is_function) return false;
  }
  return true;
}

bool ExecutesCPython(const std::string& path) {
  auto elf = ElfFile::Open(path);
  if (!elf.ok()) return false;
  if (DefinesCPythonRuntime(**elf)) return true;
  for (const auto& needed : (*elf)->needed()) {
    if (IsLibpythonName(needed)) return true;
  }
  return false;
}

}  // namespace threadscope::target

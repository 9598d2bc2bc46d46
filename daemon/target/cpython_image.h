// Whether an executable is a CPython interpreter, from its ELF file alone: the little of target
// discovery that the CLI's launcher needs (no disassembler, no layouts, no process), in a
// library of its own (//daemon/target:image) so the CLI links neither capstone nor the rest.
#pragma once

#include <string>
#include <string_view>

#include "daemon/target/elf_file.h"

namespace threadscope::target {

// True for a libpython shared object name.
bool IsLibpythonName(std::string_view basename);

// True when the binary defines CPython's runtime (a static interpreter or libpython).
bool DefinesCPythonRuntime(const ElfFile& elf);

// True when the ELF file at `path` is, or links, a CPython interpreter (an unreadable or
// non-ELF file is not).
bool ExecutesCPython(const std::string& path);

}  // namespace threadscope::target

// What threadscope knows about CPython binaries, independent of any process: the version a
// binary was built from, and how to find static functions of the built-in _thread module in
// builds without .symtab (e.g. Debian's stripped, LTO /usr/bin/python3.11).
//
// The stripped-binary technique: every builtin module keeps a PyMethodDef table in its data
// ({name, C function, flags, doc}, 32 bytes each). The name strings and function pointers are
// there even when every symbol is gone, so "_thread.start_new_thread" leads to
// thread_PyThread_start_new_thread, and the constant it passes as the first argument of
// PyThread_start_new_thread is the child's entry function (thread_run / t_bootstrap).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/common/status.h"
#include "daemon/target/cpython_image.h"  // IsLibpythonName, DefinesCPythonRuntime
#include "daemon/target/disasm.h"
#include "daemon/target/elf_file.h"

namespace threadscope::target {

struct PythonVersion {
  int major = 0;
  int minor = 0;
  int micro = -1;      // -1 when only major.minor could be determined
  std::string suffix;  // "", "a1", "rc2", "+"

  std::string ToString() const;
  bool AtLeast(int maj, int min) const { return major > maj || (major == maj && minor >= min); }
  bool Is(int maj, int min) const { return major == maj && minor == min; }
};

// "3.11.2", "2.7.18+", "3.13.0rc1", "3.8" -> PythonVersion.
std::optional<PythonVersion> ParsePythonVersion(std::string_view text);
// major.minor from a file name: libpython3.8.so.1.0, libpython3.6m.so, python3.11, python2.7.
std::optional<PythonVersion> VersionFromFileName(std::string_view basename);

// The version an interpreter binary was built from: Py_Version (3.11+), else the PY_VERSION
// literal Py_GetVersion() passes to PyOS_snprintf, else major.minor from the file name.
StatusOr<PythonVersion> DetectPythonVersion(const ElfFile& elf, const Disassembler& dis,
                                            std::string_view basename);

// Caps on the searches below, each far above what real interpreters need (measured on the
// 15 interpreters the tests use, 2.7 to Debian's 3.15: at most 2218 PyMethodDef records,
// functions of 84 KiB, 16 call sites of one libc function); past one the search stops and,
// where it matters, says so.
inline constexpr uint64_t kMaxFunctionBytes = uint64_t{1} << 20;   // decoded per function
inline constexpr size_t kMaxMethodDefs = size_t{1} << 16;          // PyMethodDef records kept
inline constexpr size_t kMaxFunctionsFollowed = 512;               // by FindCallsByName
inline constexpr size_t kMaxCallCandidates = size_t{1} << 16;      // byte patterns checked
inline constexpr uint64_t kMaxCallSearchBytes = uint64_t{64} << 20;  // decoded per search
inline constexpr size_t kMaxImportCallSites = 1024;                // returned per search

struct MethodDef {
  uint64_t address = 0;  // of the record
  std::string name;
  uint64_t function = 0;
  int flags = 0;
};
using MethodTable = std::vector<MethodDef>;

// Every PyMethodDef-shaped run of records in the binary's writable data (at most
// kMaxMethodDefs records; fewer when the file's budget runs out).
std::vector<MethodTable> FindMethodTables(const ElfFile& elf);
// The C function of `method` in the table that also lists every name in `siblings`.
std::optional<uint64_t> FindMethod(const std::vector<MethodTable>& tables, std::string_view method,
                                   const std::vector<std::string_view>& siblings);
// The table that lists every name in `siblings`.
const MethodTable* FindMethodTable(const std::vector<MethodTable>& tables,
                                   const std::vector<std::string_view>& siblings);

// tp_new of the type whose tp_methods is `methods_table`: through its PyType_Slot array
// ({Py_tp_methods, table} ... {Py_tp_new, fn}) for heap types (3.10+ _thread), else through
// the static PyTypeObject (tp_new sits 80 bytes after tp_methods in 2.7 and 3.x).
std::optional<uint64_t> FindTypeNew(const ElfFile& elf, uint64_t methods_table);

// The instructions of the function starting at vaddr (bounded by its symbol or .eh_frame
// extent; `fallback_len` bytes when neither knows it; at most kMaxFunctionBytes).
std::vector<Instruction> DecodeFunction(const ElfFile& elf, const Disassembler& dis, uint64_t vaddr,
                                        uint64_t fallback_len = 2048);

// Calls from `function` (and, up to `depth` levels, from the static functions it calls) to the
// function or PLT stub named `callee`; at most kMaxFunctionsFollowed functions are decoded.
struct ResolvedCall {
  uint64_t caller = 0;  // function containing the call
  CallSite site;
};
std::vector<ResolvedCall> FindCallsByName(const ElfFile& elf, const Disassembler& dis,
                                          uint64_t function, std::string_view callee, int depth);

// Where a binary calls an imported function (a libc function through its PLT stub or GOT
// slot, or a statically linked copy). Probing the call instruction instead of the callee's
// entry keeps the probe emulated (a call is; glibc's sem_clockwait starts with a cmp, which is
// single-stepped) and limits it to calls made by the interpreter.
struct ImportCallSite {
  uint64_t call = 0;  // the call/jmp instruction
  bool tail = false;  // jmp: the callee returns to our caller, so there is no return site
  // First instruction after the call that the kernel emulates, reached with no write to rax in
  // between: a probe there sees the callee's return value. Unset when there is none.
  std::optional<uint64_t> return_site;
  uint64_t function = 0;  // start of the function containing the call
};
struct ImportCallSites {
  std::vector<ImportCallSite> sites;  // by address
  // The search stopped at a cap (kMaxCallCandidates, kMaxCallSearchBytes, max_sites): the
  // binary may call the function from more places. The planner should say so in the probe's
  // reason rather than trace a silent subset.
  bool truncated = false;
  std::string truncated_reason;
};
ImportCallSites FindImportCallSitesBounded(const ElfFile& elf, const Disassembler& dis,
                                           std::string_view name,
                                           size_t max_sites = kMaxImportCallSites);
// The sites alone (capped the same way, without saying whether the list was cut).
std::vector<ImportCallSite> FindImportCallSites(const ElfFile& elf, const Disassembler& dis,
                                                std::string_view name);

}  // namespace threadscope::target

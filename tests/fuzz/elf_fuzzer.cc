// libFuzzer target: the ELF reader and the x86 searches over a binary the target controls
// (security review H2). Any input must give an error or a bounded answer: no out-of-bounds
// access, no undefined behaviour, no runaway loop (every search is capped and budgeted).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "daemon/target/budget.h"
#include "daemon/target/cpython.h"
#include "daemon/target/disasm.h"
#include "daemon/target/elf_file.h"

using namespace threadscope::target;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Disassembler* dis = Disassembler::Create().value().release();
  ElfOptions options;
  // Small limits keep each input fast; the caps' own correctness is what is tested.
  options.limits.max_read_bytes = 64 << 20;
  options.budget = Budget::WithWorkLimit(4 << 20);
  auto elf = ElfFile::FromBytes(std::string_view(reinterpret_cast<const char*>(data), size),
                                "fuzz", options);
  if (!elf.ok()) return 0;
  const ElfFile& e = **elf;
  (void)DefinesCPythonRuntime(e);
  (void)DetectPythonVersion(e, *dis, "libpython3.11.so.1.0");
  auto tables = FindMethodTables(e);
  (void)FindMethod(tables, "start_new_thread", {"allocate_lock", "get_ident"});
  if (const MethodTable* t = FindMethodTable(tables, {"acquire_lock"}); t && !t->empty()) {
    (void)FindTypeNew(e, t->front().address);
  }
  for (const char* name : {"sem_wait", "pthread_mutex_lock"}) {
    auto sites = FindImportCallSitesBounded(e, *dis, name, 64);
    for (const auto& s : sites.sites) (void)e.VaddrToOffset(s.call);
  }
  // A few functions, as the planner walks them.
  size_t n = 0;
  for (const auto& sym : e.symbols()) {
    if (!sym.is_function || ++n > 8) continue;
    auto code = DecodeFunction(e, *dis, sym.value);
    for (const auto& site : CallSites(code)) {
      (void)e.NameAt(site.target);
      (void)e.FunctionAround(site.target);
      if (site.args[0]) (void)e.CStringAt(*site.args[0]);
    }
    (void)FindCallsByName(e, *dis, sym.value, "PyOS_snprintf", 2);
    (void)ClassifyUprobeSite(e.BytesAt(sym.value, 15));
    (void)e.PointerAt(sym.value);
  }
  (void)e.FindRodataStrings([](std::string_view s) { return s.size() == 6; });
  return 0;
}

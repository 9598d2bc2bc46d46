// What the per-feature planners share: sites from names and addresses.
#include <cstdio>
#include <set>

#include "daemon/loader/planner.h"

namespace threadscope::loader {

namespace {

std::string Basename(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

constexpr std::string_view kEndbr64("\xf3\x0f\x1e\xfa", 4);

}  // namespace

std::string Hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

PlannedProbe::PlannedProbe(ProbeId probe_id)
    : id(probe_id),
      program(Spec(probe_id).program),
      kind(Spec(probe_id).kind),
      feeds(Spec(probe_id).feeds),
      purpose(Spec(probe_id).purpose) {}

std::vector<const PlannedProbe*> ProbePlan::Find(ProbeId id) const {
  std::vector<const PlannedProbe*> out;
  for (const auto& p : probes) {
    if (p.id == id) out.push_back(&p);
  }
  return out;
}

std::string ProbeSite::Describe() const {
  std::string s = location + " @ " + Basename(binary) + "+" + Hex(file_offset) + " via " +
                  resolved_by;
  if (!instruction.empty()) {
    s += ", first instruction '" + instruction + "' " + target::UprobeSiteKindName(site_kind);
  }
  return s;
}

PlanContext::PlanContext(const target::InspectedProcess& t, const target::Disassembler& dis)
    : t_(t), dis_(dis), code_(*t.interpreter_elf, dis) {}

std::optional<ProbeSite> PlanContext::Site(const target::ElfFile& elf,
                                           const target::BinaryRef& bin, uint64_t vaddr,
                                           std::string location, std::string resolved_by) const {
  auto offset = elf.VaddrToOffset(vaddr);
  if (!offset || !elf.IsText(vaddr)) return std::nullopt;
  ProbeSite site;
  site.binary = bin.path;
  site.host_path = bin.host_path;
  site.vaddr = vaddr;
  site.file_offset = *offset;
  site.location = std::move(location);
  site.resolved_by = std::move(resolved_by);
  std::string_view bytes = elf.BytesAt(vaddr, 15);
  auto insns = dis_.Decode(bytes, vaddr, 1);
  if (!insns.empty()) {
    site.instruction = insns[0].ToString();
    site.site_kind = target::ClassifyUprobeSite(bytes.substr(0, insns[0].size));
  }
  return site;
}

std::optional<ProbeSite> PlanContext::PySite(uint64_t vaddr, std::string location,
                                             std::string resolved_by) const {
  return Site(py(), t_.info.interpreter, vaddr, std::move(location), std::move(resolved_by));
}

std::optional<ProbeSite> PlanContext::EntrySite(uint64_t vaddr, const std::string& name,
                                                std::string resolved_by) const {
  auto entry = PySite(vaddr, name, resolved_by);
  if (!entry || entry->site_kind == target::UprobeSiteKind::kEmulated ||
      py().BytesAt(vaddr, 4) != kEndbr64) {
    return entry;
  }
  auto next = PySite(vaddr + 4, name + "+0x4 (after endbr64)", resolved_by);
  if (!next || next->site_kind != target::UprobeSiteKind::kEmulated) return entry;
  auto range = code_.RangeAround(vaddr);
  if (!range || range->begin != vaddr) return entry;  // cannot check for jumps back to it
  for (const auto& part : code_.PartsOf(vaddr)) {
    for (const auto& in : code_.Code(part.begin)) {
      if (in.branch_target == vaddr + 4 && !in.is_call) return entry;
    }
  }
  return next;
}

std::string PlanContext::Where(uint64_t entry, const std::string& name, uint64_t vaddr) const {
  for (const auto& part : code_.PartsOf(entry)) {
    if (!part.Contains(vaddr)) continue;
    std::string base = part.begin == entry ? name : name + ".cold";
    return vaddr == part.begin ? base : base + "+" + Hex(vaddr - part.begin);
  }
  return vaddr >= entry ? name + "+" + Hex(vaddr - entry) : code_.Describe(vaddr);
}

std::string PlanContext::FunctionName(uint64_t entry) const {
  if (auto name = py().NameAt(entry)) return *name;
  if (!tables_) tables_ = target::FindMethodTables(py());
  std::string methods;
  std::set<std::string> seen;  // (not a substring test: "acquire" is in "acquire_lock")
  for (const auto& table : *tables_) {
    for (const auto& def : table) {
      if (def.function != entry || !seen.insert(def.name).second) continue;
      methods += (methods.empty() ? "" : ",") + def.name;
    }
  }
  return code_.NameOf(entry) + (methods.empty() ? "" : "[" + methods + "]");
}

std::optional<ProbeSite> PlanContext::Function(const std::string& name) const {
  auto sym = py().FindSymbol(name);
  if (!sym || !sym->is_function) return std::nullopt;
  return EntrySite(sym->value, name, sym->from_dynsym ? ".dynsym" : ".symtab");
}

std::optional<ProbeSite> PlanContext::LibcFunction(const std::string& name) const {
  if (!t_.libc_elf || !t_.info.libc) return std::nullopt;
  auto sym = t_.libc_elf->FindSymbol(name);
  if (!sym || !sym->is_function) return std::nullopt;
  return Site(*t_.libc_elf, *t_.info.libc, sym->value, name, ".dynsym");
}

std::optional<uint64_t> PlanContext::ThreadModuleMethod(const std::string& name) const {
  if (!tables_) tables_ = target::FindMethodTables(py());
  return target::FindMethod(*tables_, name, {"start_new_thread", "allocate_lock", "get_ident"});
}

std::optional<uint64_t> PlanContext::TypeMethod(bool rlock, const std::string& name) const {
  if (!tables_) tables_ = target::FindMethodTables(py());
  return target::FindMethod(*tables_, name, TypeSiblings(rlock));
}

std::optional<uint64_t> PlanContext::TypeNew(bool rlock) const {
  if (!tables_) tables_ = target::FindMethodTables(py());
  const target::MethodTable* table = target::FindMethodTable(*tables_, TypeSiblings(rlock));
  if (!table || table->empty()) return std::nullopt;
  return target::FindTypeNew(py(), table->front().address);
}

std::vector<std::string_view> PlanContext::TypeSiblings(bool rlock) {
  if (rlock) return {"_release_save", "_acquire_restore", "_is_owned"};
  return {"acquire_lock", "release_lock", "locked_lock"};
}

}  // namespace threadscope::loader

#include "daemon/target/python_process.h"

#include <regex>

#include "daemon/common/text.h"

namespace threadscope::target {

namespace {

std::string Basename(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The kernel appends " (deleted)" to the path of a file unlinked since it was mapped.
std::string WithoutDeleted(const std::string& path) {
  const std::string deleted = " (deleted)";
  if (path.size() > deleted.size() &&
      path.compare(path.size() - deleted.size(), deleted.size(), deleted) == 0) {
    return path.substr(0, path.size() - deleted.size());
  }
  return path;
}

bool IsLibcName(const std::string& base) {
  static const std::regex kRe(R"(^(libc\.so\.6|libc-2\.\d+\.so|ld-musl-[a-z0-9_]+\.so\.1)$)");
  return std::regex_match(base, kRe);
}

// Load bias: where the mapping of file offset 0 starts, minus the first PT_LOAD's page.
// `maps_path` is the path exactly as /proc/PID/maps shows it (with any " (deleted)").
uint64_t LoadBias(const std::vector<Mapping>& maps, const std::string& maps_path, bool is_dyn) {
  if (!is_dyn) return 0;
  uint64_t lowest = UINT64_MAX;
  for (const auto& m : maps) {
    if (m.path == maps_path && m.offset == 0) lowest = std::min(lowest, m.start);
  }
  return lowest == UINT64_MAX ? 0 : lowest;
}

Status CheckSupportedVersion(const PythonVersion& v, const std::string& binary) {
  bool supported = (v.major == 2 && v.minor == 7) || (v.major == 3 && v.minor >= 4);
  if (!supported) {
    return FailedPreconditionError(binary + " is CPython " + v.ToString() +
                                   "; threadscope traces CPython 2.7 and 3.4 or later");
  }
  return OkStatus();
}

ElfOptions ElfOptionsFor(const InspectOptions& options) {
  ElfOptions out;
  out.limits = options.elf;
  out.budget = options.budget;
  return out;
}

struct OpenedBinary {
  BinaryRef ref;
  std::unique_ptr<ElfFile> elf;
};

StatusOr<InspectedProcess> Describe(const Disassembler& dis, OpenedBinary interp, bool is_library,
                                    std::optional<OpenedBinary> libc) {
  InspectedProcess out;
  out.interpreter_elf = std::move(interp.elf);
  std::string base = Basename(interp.ref.path);
  TS_ASSIGN_OR_RETURN(out.info.version, DetectPythonVersion(*out.interpreter_elf, dis, base));
  TS_RETURN_IF_ERROR(CheckSupportedVersion(out.info.version, interp.ref.path));
  out.info.full_symbols = out.interpreter_elf->has_symtab();
  // Free-threaded builds name their ABI with a 't' (libpython3.13t.so, python3.13t).
  static const std::regex kFreeThreaded(R"(python3\.\d+t)");
  out.info.free_threaded = std::regex_search(base, kFreeThreaded);
  out.info.interpreter = std::move(interp.ref);
  out.info.interpreter_is_library = is_library;
  if (libc) {
    out.libc_elf = std::move(libc->elf);
    out.info.libc = std::move(libc->ref);
  }
  return out;
}

}  // namespace

StatusOr<InspectedProcess> InspectPythonProcess(const ProcFs& proc, const Disassembler& dis,
                                                pid_t pid, const InspectOptions& options) {
  if (pid <= 0) return InvalidArgumentError("pid must be a positive integer, got " +
                                            std::to_string(pid));
  auto status = proc.Status(pid);
  if (!status.ok()) return NotFoundError("no process with pid " + std::to_string(pid));
  if (status->state == 'Z' || status->state == 'X') {
    return NotFoundError("process " + std::to_string(pid) + " has exited (zombie)");
  }
  if (status->tgid != pid) {
    return InvalidArgumentError(std::to_string(pid) + " is a thread of process " +
                                std::to_string(status->tgid) + "; attach to the process");
  }
  auto maps = proc.Maps(pid);
  if (!maps.ok()) {
    if (maps.status().code() == StatusCode::kNotFound) {
      return NotFoundError("process " + std::to_string(pid) + " exited");
    }
    return PermissionDeniedError("cannot read /proc/" + std::to_string(pid) +
                                 "/maps: " + maps.status().message());
  }
  if (maps->empty()) {
    return FailedPreconditionError("process " + std::to_string(pid) + " (" + status->name +
                                   ") has no memory mappings (a kernel thread?)");
  }
  auto exe_link = proc.ExeLink(pid);
  std::string exe_path = exe_link.ok() ? WithoutDeleted(*exe_link) : "";
  const ElfOptions elf_options = ElfOptionsFor(options);

  const Mapping* interp_map = nullptr;
  const Mapping* libc_map = nullptr;
  for (const auto& m : *maps) {
    std::string base = Basename(WithoutDeleted(m.path));
    if (!interp_map && IsLibpythonName(base)) interp_map = &m;
    if (!libc_map && IsLibcName(base)) libc_map = &m;
  }
  std::optional<OpenedBinary> interp;
  std::string interp_maps_path;
  bool is_library = false;
  if (interp_map) {
    // Everything read from here on is the file the process maps, whatever its path names now.
    std::string shown = ToValidUtf8(WithoutDeleted(interp_map->path));
    TS_ASSIGN_OR_RETURN(FileRef file, OpenMappedFile(proc, pid, *interp_map, options.files));
    TS_ASSIGN_OR_RETURN(auto elf, ElfFile::FromFile(file, shown, elf_options));
    interp = OpenedBinary{BinaryRef{shown, file->ProcPath(), 0, file}, std::move(elf)};
    interp_maps_path = interp_map->path;
    is_library = true;
  } else if (exe_link.ok()) {
    // A statically linked interpreter: the executable itself defines the runtime. Read through
    // /proc/PID/exe: the inode exec'd, even if its path was deleted or replaced (by a FIFO...).
    std::string shown = ToValidUtf8(exe_path);
    TS_ASSIGN_OR_RETURN(FileRef file, OpenProcessExe(proc, pid, options.files.limits));
    TS_ASSIGN_OR_RETURN(auto elf, ElfFile::FromFile(file, shown, elf_options));
    if (DefinesCPythonRuntime(*elf)) {
      interp = OpenedBinary{BinaryRef{shown, file->ProcPath(), 0, file}, std::move(elf)};
      interp_maps_path = *exe_link;
    }
  }
  if (!interp) {
    return FailedPreconditionError(
        "process " + std::to_string(pid) + " (" + ToValidUtf8(status->name) +
        ") is not CPython: no libpython*.so is mapped and " +
        (exe_path.empty() ? std::string("its executable") : ToValidUtf8(exe_path)) +
        " does not define the CPython runtime");
  }
  std::optional<OpenedBinary> libc;
  std::string libc_unavailable;
  if (libc_map) {
    // libc is optional (lock and GIL probes say so when it is missing); a libc that cannot be
    // read safely is left out, with the reason.
    std::string shown = ToValidUtf8(WithoutDeleted(libc_map->path));
    auto file = OpenMappedFile(proc, pid, *libc_map, options.files);
    if (file.ok()) {
      auto elf = ElfFile::FromFile(*file, shown, elf_options);
      if (elf.ok()) {
        libc = OpenedBinary{BinaryRef{shown, (*file)->ProcPath(), 0, *file}, std::move(*elf)};
      } else {
        libc_unavailable = elf.status().message();
      }
    } else {
      libc_unavailable = file.status().message();
    }
  }
  auto described = Describe(dis, std::move(*interp), is_library, std::move(libc));
  if (!described.ok()) return described.status();
  if (options.budget) TS_RETURN_IF_ERROR(options.budget->status());
  InspectedProcess out = std::move(described).value();
  out.libc_unavailable = std::move(libc_unavailable);
  out.info.interpreter.load_bias =
      LoadBias(*maps, interp_maps_path, out.interpreter_elf->is_shared_object());
  if (out.info.libc && out.libc_elf) {
    out.info.libc->load_bias = LoadBias(*maps, libc_map->path, true);
  }
  out.info.pid = pid;
  out.info.status = *status;
  out.info.ns_pid = status->ns_pids.empty() ? pid : status->ns_pids.back();
  out.info.executable = exe_path;
  auto cmdline = proc.Cmdline(pid);
  out.info.command_line = cmdline.ok() ? *cmdline : "";
  out.info.other_mount_namespace = proc.InOtherMountNamespace(pid);
  return out;
}

StatusOr<InspectedProcess> InspectPythonBinary(const Disassembler& dis, const std::string& path,
                                               const InspectOptions& options) {
  const ElfOptions elf_options = ElfOptionsFor(options);
  auto open = [&](const std::string& p) -> StatusOr<OpenedBinary> {
    TS_ASSIGN_OR_RETURN(FileRef file, OpenRegularFile(p, p, options.files.limits));
    TS_ASSIGN_OR_RETURN(auto elf, ElfFile::FromFile(file, p, elf_options));
    return OpenedBinary{BinaryRef{p, p, 0, file}, std::move(elf)};
  };
  TS_ASSIGN_OR_RETURN(OpenedBinary binary, open(path));
  bool is_library = IsLibpythonName(Basename(path));
  if (!is_library && !DefinesCPythonRuntime(*binary.elf)) {
    // A dynamically linked python executable: follow DT_NEEDED/RUNPATH to its libpython.
    // (A copy: the loop replaces `binary`, and the list with it.)
    const std::vector<std::string> needed_libs = binary.elf->needed();
    for (const auto& needed : needed_libs) {
      if (!IsLibpythonName(needed) || is_library) continue;
      std::string dir = path.substr(0, path.rfind('/'));
      for (const std::string& candidate :
           {dir + "/../lib/" + needed, "/usr/lib/x86_64-linux-gnu/" + needed, "/usr/lib/" + needed,
            "/usr/local/lib/" + needed}) {
        if (auto lib = open(candidate); lib.ok()) {
          binary = std::move(*lib);
          is_library = true;
          break;
        }
      }
    }
    if (!is_library) {
      return FailedPreconditionError(path + " is not a CPython interpreter binary");
    }
  }
  std::optional<OpenedBinary> libc;
  for (const char* candidate : {"/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/libc.so.6"}) {
    if (auto lib = open(candidate); lib.ok()) {
      libc = std::move(*lib);
      break;
    }
  }
  auto described = Describe(dis, std::move(binary), is_library, std::move(libc));
  if (described.ok() && options.budget) TS_RETURN_IF_ERROR(options.budget->status());
  return described;
}

}  // namespace threadscope::target

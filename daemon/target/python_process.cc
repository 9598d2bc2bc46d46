#include "daemon/target/python_process.h"

#include <regex>

namespace threadscope::target {

namespace {

std::string Basename(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool IsLibcName(const std::string& base) {
  static const std::regex kRe(R"(^(libc\.so\.6|libc-2\.\d+\.so|ld-musl-[a-z0-9_]+\.so\.1)$)");
  return std::regex_match(base, kRe);
}

// Load bias: where the mapping of file offset 0 starts, minus the first PT_LOAD's page.
uint64_t LoadBias(const std::vector<Mapping>& maps, const std::string& path, bool is_dyn) {
  if (!is_dyn) return 0;
  uint64_t lowest = UINT64_MAX;
  for (const auto& m : maps) {
    if (m.path == path && m.offset == 0) lowest = std::min(lowest, m.start);
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

StatusOr<InspectedProcess> Describe(const Disassembler& dis, BinaryRef interp, bool is_library,
                                    std::optional<BinaryRef> libc) {
  InspectedProcess out;
  TS_ASSIGN_OR_RETURN(out.interpreter_elf, ElfFile::Open(interp.host_path));
  std::string base = Basename(interp.path);
  TS_ASSIGN_OR_RETURN(out.info.version, DetectPythonVersion(*out.interpreter_elf, dis, base));
  TS_RETURN_IF_ERROR(CheckSupportedVersion(out.info.version, interp.path));
  out.info.full_symbols = out.interpreter_elf->has_symtab();
  // Free-threaded builds name their ABI with a 't' (libpython3.13t.so, python3.13t).
  static const std::regex kFreeThreaded(R"(python3\.\d+t)");
  out.info.free_threaded = std::regex_search(base, kFreeThreaded);
  out.info.interpreter = std::move(interp);
  out.info.interpreter_is_library = is_library;
  if (libc) {
    auto elf = ElfFile::Open(libc->host_path);
    if (elf.ok()) {
      out.libc_elf = std::move(elf).value();
      out.info.libc = std::move(libc);
    }
  }
  return out;
}

}  // namespace

StatusOr<InspectedProcess> InspectPythonProcess(const ProcFs& proc, const Disassembler& dis,
                                                pid_t pid) {
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
  auto exe = proc.ExePath(pid);
  std::string exe_path = exe.ok() ? *exe : "";

  std::optional<BinaryRef> interp;
  bool is_library = false;
  std::optional<BinaryRef> libc;
  for (const auto& m : *maps) {
    std::string base = Basename(m.path);
    if (!interp && IsLibpythonName(base)) {
      interp = BinaryRef{m.path, proc.HostPath(pid, m.path), 0};
      is_library = true;
    }
    if (!libc && IsLibcName(base)) libc = BinaryRef{m.path, proc.HostPath(pid, m.path), 0};
  }
  if (!interp && !exe_path.empty()) {
    // A statically linked interpreter: the executable itself defines the runtime.
    std::string host = proc.PidDir(pid) + "/exe";
    auto elf = ElfFile::Open(host);
    if (elf.ok() && DefinesCPythonRuntime(**elf)) {
      interp = BinaryRef{exe_path, proc.HostPath(pid, exe_path), 0};
    }
  }
  if (!interp) {
    return FailedPreconditionError(
        "process " + std::to_string(pid) + " (" + status->name + ") is not CPython: no " +
        "libpython*.so is mapped and " + (exe_path.empty() ? "its executable" : exe_path) +
        " does not define the CPython runtime");
  }
  auto described = Describe(dis, *interp, is_library, libc);
  if (!described.ok()) return described.status();
  InspectedProcess out = std::move(described).value();
  out.info.interpreter.load_bias =
      LoadBias(*maps, out.info.interpreter.path, out.interpreter_elf->is_shared_object());
  if (out.info.libc && out.libc_elf) {
    out.info.libc->load_bias = LoadBias(*maps, out.info.libc->path, true);
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

StatusOr<InspectedProcess> InspectPythonBinary(const Disassembler& dis, const std::string& path) {
  TS_ASSIGN_OR_RETURN(auto elf, ElfFile::Open(path));
  BinaryRef interp{path, path, 0};
  bool is_library = IsLibpythonName(Basename(path));
  if (!is_library && !DefinesCPythonRuntime(*elf)) {
    // A dynamically linked python executable: follow DT_NEEDED/RUNPATH to its libpython.
    for (const auto& needed : elf->needed()) {
      if (!IsLibpythonName(needed)) continue;
      std::string dir = path.substr(0, path.rfind('/'));
      for (const std::string& candidate :
           {dir + "/../lib/" + needed, "/usr/lib/x86_64-linux-gnu/" + needed, "/usr/lib/" + needed,
            "/usr/local/lib/" + needed}) {
        if (ElfFile::Open(candidate).ok()) {
          interp = BinaryRef{candidate, candidate, 0};
          is_library = true;
          break;
        }
      }
    }
    if (!is_library) {
      return FailedPreconditionError(path + " is not a CPython interpreter binary");
    }
  }
  std::optional<BinaryRef> libc;
  for (const char* candidate : {"/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/libc.so.6"}) {
    if (ElfFile::Open(candidate).ok()) {
      libc = BinaryRef{candidate, candidate, 0};
      break;
    }
  }
  return Describe(dis, interp, is_library, libc);
}

}  // namespace threadscope::target

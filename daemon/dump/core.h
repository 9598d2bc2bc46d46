// An ELF core file (gdb's gcore, or the kernel's) as a memory image: its PT_LOAD segments hold
// the memory that was dumped; what was not dumped (read-only file mappings: code, constants)
// is read from the files the NT_FILE note says were mapped, once the caller has vouched for
// them (BackWith). NT_PRSTATUS gives each thread's tid and registers, NT_PRPSINFO the pid.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon/common/status.h"
#include "daemon/dump/memory.h"
#include "daemon/dump/reader.h"

namespace threadscope::dump {

class CoreFile : public MemoryReader {
 public:
  struct FileMapping {
    uint64_t start = 0;
    uint64_t end = 0;
    uint64_t offset = 0;  // in the file, bytes
    std::string path;     // as the crashed process saw it
  };

  // Errors: NotFound (no such file), PermissionDenied, DataLoss (not an x86-64 ELF core, or
  // truncated notes).
  static StatusOr<std::unique_ptr<CoreFile>> Open(const std::string& path);
  ~CoreFile() override;

  bool Read(uint64_t addr, void* out, size_t n) const override;
  // Only what the core itself holds (no backing files).
  bool ReadDumped(uint64_t addr, void* out, size_t n) const;

  // Reads of mappings of `path_in_core` that the core did not dump come from `host_path`.
  Status BackWith(const std::string& path_in_core, const std::string& host_path);

  pid_t pid() const { return pid_; }
  const std::string& command() const { return psargs_; }
  const std::vector<FileMapping>& files() const { return files_; }
  const std::vector<TaskContext>& tasks() const { return tasks_; }
  std::optional<uint64_t> Auxv(uint64_t type) const;
  // The path of the mapped file containing addr, or "".
  std::string FileAt(uint64_t addr) const;
  // Lowest address a file is mapped at with offset 0 (its load address), or 0.
  uint64_t LoadAddress(const std::string& path_in_core) const;
  // The GNU build-id (hex) of the ELF file mapped at load_address, from the copy of its first
  // page the core holds; "" when the core has none.
  std::string BuildIdAt(uint64_t load_address) const;

 private:
  CoreFile() = default;
  Status Parse();
  bool ReadFile(const FileMapping& m, uint64_t addr, void* out, size_t n) const;

  struct Segment {
    uint64_t vaddr, offset, filesz, memsz;
  };
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
  std::vector<Segment> segments_;  // sorted by vaddr
  std::vector<FileMapping> files_;
  std::vector<TaskContext> tasks_;
  std::vector<std::pair<uint64_t, uint64_t>> auxv_;
  std::map<std::string, int> backing_;  // path in core -> fd of the host file
  pid_t pid_ = 0;
  std::string psargs_;
  std::string fname_;
};

}  // namespace threadscope::dump

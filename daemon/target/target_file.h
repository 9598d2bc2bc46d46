// Files a traced process chooses (its executable, the libraries it maps), opened so that the
// process cannot make the daemon block (a FIFO), take a controlling terminal (a tty), open a
// device, allocate without bound (a sparse many-GiB file) or read a different file from the one
// the process runs (a path replaced after exec or mmap).
//
// Each file is first opened with O_PATH, which opens nothing and so cannot block or have side
// effects; only a regular file of bounded size is then reopened for reading, through
// /proc/self/fd, with O_RDONLY|O_NONBLOCK|O_NOCTTY|O_CLOEXEC. The resulting FileHandle is what
// the ELF reader parses and what uprobes attach to (ProcPath()), so the kernel resolves the very
// inode that was checked.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "daemon/common/status.h"
#include "daemon/target/procfs.h"

namespace threadscope::target {

// No CPython binary comes near this (the largest here, a static LTO 3.15, is 9 MiB; a pyenv
// libpython with DWARF 31 MiB). Larger "interpreters" are refused without reading them.
inline constexpr uint64_t kMaxTargetFileBytes = uint64_t{4} << 30;

struct FileLimits {
  uint64_t max_bytes = kMaxTargetFileBytes;
  // FUSE files are served by a user-space process, which can leave a read blocked forever;
  // nothing a deadline can interrupt.
  bool allow_fuse = false;
};

// An open, read-only descriptor of a regular file that passed the checks above.
class FileHandle {
 public:
  FileHandle(int fd, const struct stat& st) : fd_(fd), st_(st) {}
  ~FileHandle();
  FileHandle(const FileHandle&) = delete;
  FileHandle& operator=(const FileHandle&) = delete;

  int fd() const { return fd_; }
  uint64_t size() const { return static_cast<uint64_t>(st_.st_size); }
  const struct stat& stat() const { return st_; }
  // "/proc/self/fd/N": a path the kernel resolves to this very file for as long as the handle
  // lives (uprobe attach, single and multi, follows it like any path).
  std::string ProcPath() const;
  // Reads exactly n bytes at offset: an error, not a short read, if the file shrank.
  Status ReadAt(uint64_t offset, void* out, size_t n) const;

 private:
  int fd_;
  struct stat st_;
};

using FileRef = std::shared_ptr<const FileHandle>;

// Opens `path` (following symlinks, relative to the current directory) as a regular file.
// `what` names the file in errors ("the executable of pid 42"). Errors: NotFound,
// PermissionDenied, FailedPrecondition (not a regular file; on FUSE), ResourceExhausted (larger
// than limits.max_bytes).
StatusOr<FileRef> OpenRegularFile(const std::string& path, const std::string& what,
                                  const FileLimits& limits = {});

// The same for `path` resolved as if `root_fd` were "/" (openat2 RESOLVE_IN_ROOT): absolute
// symlinks and ".." stay inside that root, and /proc magic links are not followed.
StatusOr<FileRef> OpenRegularFileInRoot(int root_fd, const std::string& path,
                                        const std::string& what, const FileLimits& limits = {});

// The executable pid runs, through /proc/PID/exe: the inode exec'd, even when its path was
// deleted or now names something else (a FIFO, a different binary).
StatusOr<FileRef> OpenProcessExe(const ProcFs& proc, pid_t pid, const FileLimits& limits = {});

struct MappedFileOptions {
  // /proc/PID/map_files/<start>-<end> is the mapped file itself, but the kernel lets only
  // CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN (init namespace) open it. False skips it (tests).
  bool use_map_files = true;
  FileLimits limits;
};

// A file `pid` maps: through map_files when allowed; else its path, resolved inside the
// process's root (/proc/PID/root) and then in this process's own root (a chroot'ed target in
// our mount namespace shows host paths in maps), accepted only when the opened file's device
// and inode are the ones the maps line names. Errors as OpenRegularFile, and FailedPrecondition
// when the path no longer leads to the mapped file (replaced or deleted since it was mapped).
StatusOr<FileRef> OpenMappedFile(const ProcFs& proc, pid_t pid, const Mapping& mapping,
                                 const MappedFileOptions& options = {});

}  // namespace threadscope::target

#include "daemon/target/target_file.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <optional>
#include <vector>

namespace threadscope::target {

namespace {

// Closes an fd on scope exit unless released.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

const char* FileTypeName(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFIFO: return "a FIFO";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    case S_IFDIR: return "a directory";
    case S_IFSOCK: return "a socket";
    case S_IFLNK: return "a symbolic link";
    default: return "not a regular file";
  }
}

std::string Gib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f GiB", static_cast<double>(bytes) / (1u << 30));
  return buf;
}

std::string DevIno(unsigned major_num, unsigned minor_num, uint64_t ino) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "dev %02x:%02x inode %llu", major_num, minor_num,
                static_cast<unsigned long long>(ino));
  return buf;
}

// Checks what an O_PATH descriptor names, then opens it for reading. Owns path_fd.
StatusOr<FileRef> Reopen(int path_fd, const std::string& what, const FileLimits& limits) {
  FdCloser path(path_fd);
  struct stat st;
  if (fstat(path.get(), &st) != 0) return ErrnoToStatus(errno, "cannot stat " + what);
  if (!S_ISREG(st.st_mode)) {
    return FailedPreconditionError("refusing " + what + ": it is " + FileTypeName(st.st_mode) +
                                   ", and threadscope reads only regular files");
  }
  if (st.st_size < 0 || static_cast<uint64_t>(st.st_size) > limits.max_bytes) {
    return ResourceExhaustedError("refusing " + what + ": it is " +
                                  Gib(static_cast<uint64_t>(st.st_size)) + ", more than the " +
                                  Gib(limits.max_bytes) +
                                  " threadscope reads from one binary (a sparse or padded file?)");
  }
  struct statfs fs;
  if (!limits.allow_fuse && fstatfs(path.get(), &fs) == 0 &&
      static_cast<unsigned long>(fs.f_type) == FUSE_SUPER_MAGIC) {
    return FailedPreconditionError(
        "refusing " + what +
        ": it is on a FUSE filesystem, whose user-space server can stall reads indefinitely; "
        "run the interpreter from a local filesystem");
  }
  // O_PATH descriptors cannot be read; reopening through /proc/self/fd opens this inode, not
  // whatever the path names now. O_NONBLOCK and O_NOCTTY are moot for a regular file, and kept
  // so that no mistake above can turn into a blocked open or a controlling terminal.
  std::string self = "/proc/self/fd/" + std::to_string(path.get());
  int fd = open(self.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "cannot open " + what);
  FdCloser reading(fd);
  struct stat again;
  if (fstat(fd, &again) != 0) return ErrnoToStatus(errno, "cannot stat " + what);
  if (again.st_dev != st.st_dev || again.st_ino != st.st_ino || !S_ISREG(again.st_mode)) {
    return InternalError("reopening " + what + " through /proc/self/fd reached another file");
  }
  return FileRef(std::make_shared<const FileHandle>(reading.release(), again));
}

int Openat2(int dirfd, const std::string& path, uint64_t flags, uint64_t resolve) {
  open_how how{};
  how.flags = flags;
  how.resolve = resolve;
  return static_cast<int>(syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof(how)));
}

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "%llx", static_cast<unsigned long long>(v));
  return buf;
}

bool SameFile(const FileHandle& f, const Mapping& m) {
  return m.dev_major == major(f.stat().st_dev) && m.dev_minor == minor(f.stat().st_dev) &&
         m.inode == static_cast<uint64_t>(f.stat().st_ino);
}

}  // namespace

FileHandle::~FileHandle() {
  if (fd_ >= 0) close(fd_);
}

std::string FileHandle::ProcPath() const { return "/proc/self/fd/" + std::to_string(fd_); }

Status FileHandle::ReadAt(uint64_t offset, void* out, size_t n) const {
  auto* dst = static_cast<uint8_t*>(out);
  size_t done = 0;
  while (done < n) {
    ssize_t r = pread(fd_, dst + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return ErrnoToStatus(errno, "cannot read");
    if (r == 0) return DataLossError("file ended early (changed while being read?)");
    done += static_cast<size_t>(r);
  }
  return OkStatus();
}

StatusOr<FileRef> OpenRegularFile(const std::string& path, const std::string& what,
                                  const FileLimits& limits) {
  int fd = open(path.c_str(), O_PATH | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "cannot open " + what);
  return Reopen(fd, what, limits);
}

StatusOr<FileRef> OpenRegularFileInRoot(int root_fd, const std::string& path,
                                        const std::string& what, const FileLimits& limits) {
  int fd = Openat2(root_fd, path, O_PATH | O_CLOEXEC, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
  if (fd < 0 && errno == ENOSYS) {
    return UnimplementedError("cannot open " + what + " safely: openat2 needs Linux 5.6 or later");
  }
  if (fd < 0) return ErrnoToStatus(errno, "cannot open " + what);
  return Reopen(fd, what, limits);
}

StatusOr<FileRef> OpenProcessExe(const ProcFs& proc, pid_t pid, const FileLimits& limits) {
  std::string link = proc.PidDir(pid) + "/exe";
  std::string what = "the executable of pid " + std::to_string(pid);
  int fd = open(link.c_str(), O_PATH | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return NotFoundError("process " + std::to_string(pid) + " exited");
    return ErrnoToStatus(errno, "cannot open " + link);
  }
  return Reopen(fd, what, limits);
}

StatusOr<FileRef> OpenMappedFile(const ProcFs& proc, pid_t pid, const Mapping& m,
                                 const MappedFileOptions& options) {
  std::string what = m.path + " (mapped by pid " + std::to_string(pid) + ")";
  if (options.use_map_files) {
    std::string link = proc.PidDir(pid) + "/map_files/" + Hex(m.start) + "-" + Hex(m.end);
    int fd = open(link.c_str(), O_PATH | O_CLOEXEC);
    if (fd >= 0) return Reopen(fd, what, options.limits);
    // EPERM without the capability; ENOENT if the mapping went away (then the path is no
    // better, but its check below gives the clearer error).
  }

  // The kernel shows a deleted file as "path (deleted)"; a file may also really be named so.
  std::vector<std::string> paths{m.path};
  const std::string deleted = " (deleted)";
  if (m.path.size() > deleted.size() &&
      m.path.compare(m.path.size() - deleted.size(), deleted.size(), deleted) == 0) {
    paths.push_back(m.path.substr(0, m.path.size() - deleted.size()));
  }
  std::string root_link = proc.PidDir(pid) + "/root";
  int root_fd = open(root_link.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root_fd < 0) {
    if (errno == ENOENT) return NotFoundError("process " + std::to_string(pid) + " exited");
    return ErrnoToStatus(errno, "cannot open " + root_link);
  }
  FdCloser root(root_fd);
  int own_root_fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
  FdCloser own_root(own_root_fd);

  std::optional<Status> first_error;
  std::optional<std::string> mismatch;
  for (const std::string& path : paths) {
    if (path.empty() || path[0] != '/') continue;
    for (int dir : {root.get(), own_root.get()}) {
      if (dir < 0) continue;
      auto f = OpenRegularFileInRoot(dir, path, what, options.limits);
      if (!f.ok()) {
        if (!first_error) first_error = f.status();
        continue;
      }
      if (SameFile(**f, m)) return f;
      mismatch = DevIno(major((*f)->stat().st_dev), minor((*f)->stat().st_dev),
                        static_cast<uint64_t>((*f)->stat().st_ino));
    }
  }
  std::string cap_hint =
      "; threadscoped can open the mapping itself when it has CAP_CHECKPOINT_RESTORE";
  if (mismatch) {
    return FailedPreconditionError("refusing " + what + ": the file at that path (" + *mismatch +
                                   ") is not the one the process mapped (" +
                                   DevIno(m.dev_major, m.dev_minor, m.inode) +
                                   "): it was replaced or deleted since" + cap_hint);
  }
  if (paths.size() > 1 || !first_error) {
    return FailedPreconditionError("refusing " + what +
                                   ": it was deleted after the process mapped it" + cap_hint);
  }
  return *first_error;
}

}  // namespace threadscope::target

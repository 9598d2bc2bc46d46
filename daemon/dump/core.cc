#include "daemon/dump/core.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "daemon/dump/live.h"

namespace threadscope::dump {

namespace {

constexpr size_t kMaxNotes = 64 << 20;      // bytes of PT_NOTE read at most
constexpr size_t kMaxSegments = 1 << 16;
constexpr size_t kMaxThreads = 1 << 16;

bool PreadAll(int fd, void* out, size_t n, uint64_t off) {
  auto* p = static_cast<uint8_t*>(out);
  while (n > 0) {
    ssize_t r = pread(fd, p, n, static_cast<off_t>(off));
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
    off += static_cast<uint64_t>(r);
  }
  return true;
}

uint64_t Get64(const std::string& s, size_t off) {
  uint64_t v = 0;
  if (off + 8 <= s.size()) std::memcpy(&v, s.data() + off, 8);
  return v;
}

uint32_t Get32(const std::string& s, size_t off) {
  uint32_t v = 0;
  if (off + 4 <= s.size()) std::memcpy(&v, s.data() + off, 4);
  return v;
}

}  // namespace

CoreFile::~CoreFile() {
  if (fd_ >= 0) close(fd_);
  for (auto& [path, fd] : backing_) close(fd);
}

StatusOr<std::unique_ptr<CoreFile>> CoreFile::Open(const std::string& path) {
  std::unique_ptr<CoreFile> c(new CoreFile());
  c->path_ = path;
  c->fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (c->fd_ < 0) {
    int err = errno;
    if (err == ENOENT) return NotFoundError("no core file " + path);
    if (err == EACCES || err == EPERM) return PermissionDeniedError("cannot read " + path);
    return ErrnoToStatus(err, "open " + path);
  }
  struct stat st;
  if (fstat(c->fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    return DataLossError(path + " is not a regular file");
  }
  c->size_ = static_cast<uint64_t>(st.st_size);
  TS_RETURN_IF_ERROR(c->Parse());
  return c;
}

Status CoreFile::Parse() {
  Elf64_Ehdr eh;
  if (!PreadAll(fd_, &eh, sizeof(eh), 0) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) {
    return DataLossError(path_ + " is not an ELF file");
  }
  if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_machine != EM_X86_64) {
    return DataLossError(path_ + " is not an x86-64 core file");
  }
  if (eh.e_type != ET_CORE) return DataLossError(path_ + " is an ELF file but not a core file");
  if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phnum > kMaxSegments) {
    return DataLossError(path_ + ": bad program header table");
  }
  std::vector<Elf64_Phdr> ph(eh.e_phnum);
  if (!PreadAll(fd_, ph.data(), ph.size() * sizeof(Elf64_Phdr), eh.e_phoff)) {
    return DataLossError(path_ + ": truncated program header table");
  }
  std::string notes;
  for (const auto& p : ph) {
    if (p.p_type == PT_LOAD) {
      if (p.p_filesz > 0 && p.p_offset + p.p_filesz > size_) {
        return DataLossError(path_ + " is truncated: a memory segment ends past the file's end");
      }
      segments_.push_back({p.p_vaddr, p.p_offset, p.p_filesz, p.p_memsz});
    } else if (p.p_type == PT_NOTE) {
      if (p.p_filesz > kMaxNotes || p.p_offset + p.p_filesz > size_) {
        return DataLossError(path_ + ": truncated notes");
      }
      std::string n(p.p_filesz, '\0');
      if (!PreadAll(fd_, n.data(), n.size(), p.p_offset)) {
        return DataLossError(path_ + ": unreadable notes");
      }
      notes += n;
    }
  }
  std::sort(segments_.begin(), segments_.end(),
            [](const Segment& a, const Segment& b) { return a.vaddr < b.vaddr; });
  size_t i = 0;
  while (i + 12 <= notes.size()) {
    uint32_t namesz = Get32(notes, i), descsz = Get32(notes, i + 4), type = Get32(notes, i + 8);
    size_t name_off = i + 12;
    size_t desc_off = name_off + ((namesz + 3) & ~3u);
    size_t next = desc_off + ((descsz + 3) & ~3u);
    if (next > notes.size() || desc_off > notes.size()) break;
    std::string name = notes.substr(name_off, namesz ? namesz - 1 : 0);
    std::string desc = notes.substr(desc_off, descsz);
    if (name == "CORE" && type == NT_PRSTATUS && desc.size() >= 112 + 27 * 8 &&
        tasks_.size() < kMaxThreads) {
      TaskContext t;
      t.tid = static_cast<pid_t>(Get32(desc, 32));
      const size_t r = 112;  // pr_reg: struct user_regs_struct
      Registers regs;
      regs.rbp = Get64(desc, r + 4 * 8);
      regs.rax = static_cast<int64_t>(Get64(desc, r + 10 * 8));
      regs.args = {Get64(desc, r + 14 * 8), Get64(desc, r + 13 * 8), Get64(desc, r + 12 * 8),
                   Get64(desc, r + 7 * 8),  Get64(desc, r + 9 * 8),  Get64(desc, r + 8 * 8)};
      regs.orig_rax = static_cast<int64_t>(Get64(desc, r + 15 * 8));
      regs.rip = Get64(desc, r + 16 * 8);
      regs.rsp = Get64(desc, r + 19 * 8);
      regs.fs_base = Get64(desc, r + 21 * 8);
      t.syscall = SyscallFromRegisters(regs);
      t.regs = regs;
      tasks_.push_back(std::move(t));
    } else if (name == "CORE" && type == NT_PRPSINFO && desc.size() >= 136) {
      pid_ = static_cast<pid_t>(Get32(desc, 24));
      std::string fname = desc.substr(40, 16);
      fname = fname.substr(0, fname.find('\0'));
      psargs_ = desc.substr(56, 80);
      psargs_ = psargs_.substr(0, psargs_.find('\0'));
      fname_ = fname;
    } else if (name == "CORE" && type == NT_AUXV) {
      for (size_t a = 0; a + 16 <= desc.size(); a += 16) {
        auxv_.push_back({Get64(desc, a), Get64(desc, a + 8)});
      }
    } else if (name == "CORE" && type == 0x46494c45 /* NT_FILE */ && desc.size() >= 16) {
      uint64_t count = Get64(desc, 0), page = Get64(desc, 8);
      if (count > kMaxSegments || 16 + count * 24 > desc.size()) {
        return DataLossError(path_ + ": malformed NT_FILE note");
      }
      size_t names = 16 + count * 24;
      for (uint64_t k = 0; k < count; ++k) {
        FileMapping m;
        m.start = Get64(desc, 16 + k * 24);
        m.end = Get64(desc, 16 + k * 24 + 8);
        m.offset = Get64(desc, 16 + k * 24 + 16) * page;
        size_t end = desc.find('\0', names);
        if (end == std::string::npos) break;
        m.path = desc.substr(names, end - names);
        names = end + 1;
        files_.push_back(std::move(m));
      }
    }
    i = next;
  }
  if (tasks_.empty()) return DataLossError(path_ + " has no thread (NT_PRSTATUS) notes");
  if (!pid_) pid_ = tasks_.front().tid;
  // A core keeps the process's name only; the other threads' names are not in it.
  for (auto& t : tasks_) {
    if (t.tid == pid_) t.comm = fname_;
  }
  return OkStatus();
}

bool CoreFile::ReadDumped(uint64_t addr, void* out, size_t n) const {
  auto* dst = static_cast<uint8_t*>(out);
  while (n > 0) {
    auto it = std::upper_bound(segments_.begin(), segments_.end(), addr,
                               [](uint64_t a, const Segment& s) { return a < s.vaddr; });
    if (it == segments_.begin()) return false;
    const Segment& s = *--it;
    if (addr >= s.vaddr + s.filesz) return false;
    size_t take = static_cast<size_t>(std::min<uint64_t>(n, s.vaddr + s.filesz - addr));
    if (!PreadAll(fd_, dst, take, s.offset + (addr - s.vaddr))) return false;
    dst += take;
    addr += take;
    n -= take;
  }
  return true;
}

bool CoreFile::ReadFile(const FileMapping& m, uint64_t addr, void* out, size_t n) const {
  auto it = backing_.find(m.path);
  if (it == backing_.end()) return false;
  return PreadAll(it->second, out, n, m.offset + (addr - m.start));
}

bool CoreFile::Read(uint64_t addr, void* out, size_t n) const {
  if (n == 0) return true;
  if (addr + n < addr) return false;
  if (ReadDumped(addr, out, n)) return true;
  // Piece by piece: each byte range from the core, else from the mapped file.
  auto* dst = static_cast<uint8_t*>(out);
  while (n > 0) {
    size_t take = static_cast<size_t>(std::min<uint64_t>(n, 4096 - (addr & 4095)));
    if (!ReadDumped(addr, dst, take)) {
      const FileMapping* m = nullptr;
      for (const auto& f : files_) {
        if (addr >= f.start && addr + take <= f.end) m = &f;
      }
      if (!m || !ReadFile(*m, addr, dst, take)) return false;
    }
    dst += take;
    addr += take;
    n -= take;
  }
  return true;
}

Status CoreFile::BackWith(const std::string& path_in_core, const std::string& host_path) {
  int fd = open(host_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "open " + host_path);
  auto it = backing_.find(path_in_core);
  if (it != backing_.end()) close(it->second);
  backing_[path_in_core] = fd;
  return OkStatus();
}

std::optional<uint64_t> CoreFile::Auxv(uint64_t type) const {
  for (const auto& [t, v] : auxv_) {
    if (t == type) return v;
  }
  return std::nullopt;
}

std::string CoreFile::FileAt(uint64_t addr) const {
  for (const auto& f : files_) {
    if (addr >= f.start && addr < f.end) return f.path;
  }
  return "";
}

uint64_t CoreFile::LoadAddress(const std::string& path) const {
  uint64_t lowest = 0;
  for (const auto& f : files_) {
    if (f.path == path && f.offset == 0 && (!lowest || f.start < lowest)) lowest = f.start;
  }
  return lowest;
}

std::string CoreFile::BuildIdAt(uint64_t base) const {
  Elf64_Ehdr eh;
  if (!base || !ReadDumped(base, &eh, sizeof(eh)) ||
      std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_phentsize != sizeof(Elf64_Phdr) ||
      eh.e_phnum > 256) {
    return "";
  }
  std::vector<Elf64_Phdr> ph(eh.e_phnum);
  if (!ReadDumped(base + eh.e_phoff, ph.data(), ph.size() * sizeof(Elf64_Phdr))) return "";
  // The first PT_LOAD tells where the file's vaddr 0 sits (ET_DYN: base; ET_EXEC: 0).
  uint64_t bias = 0;
  for (const auto& p : ph) {
    if (p.p_type == PT_LOAD) {
      bias = eh.e_type == ET_DYN ? base - (p.p_vaddr & ~uint64_t{4095}) : 0;
      break;
    }
  }
  for (const auto& p : ph) {
    if (p.p_type != PT_NOTE || p.p_filesz > 4096) continue;
    std::string n(p.p_filesz, '\0');
    if (!ReadDumped(p.p_vaddr + bias, n.data(), n.size())) continue;
    size_t i = 0;
    while (i + 12 <= n.size()) {
      uint32_t namesz = Get32(n, i), descsz = Get32(n, i + 4), type = Get32(n, i + 8);
      size_t desc = i + 12 + ((namesz + 3) & ~3u);
      if (desc + descsz > n.size()) break;
      if (type == NT_GNU_BUILD_ID && namesz == 4 && n.compare(i + 12, 3, "GNU") == 0) {
        static const char* kHex = "0123456789abcdef";
        std::string hex;
        for (size_t k = 0; k < descsz; ++k) {
          uint8_t b = static_cast<uint8_t>(n[desc + k]);
          hex.push_back(kHex[b >> 4]);
          hex.push_back(kHex[b & 15]);
        }
        return hex;
      }
      i = desc + ((descsz + 3) & ~3u);
    }
  }
  return "";
}

}  // namespace threadscope::dump

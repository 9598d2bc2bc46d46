#include "daemon/target/procfs.h"

#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <sstream>

namespace threadscope::target {

StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoToStatus(errno, "cannot read " + path);
  std::ostringstream out;
  out << in.rdbuf();
  if (in.bad()) return ErrnoToStatus(errno, "cannot read " + path);
  return out.str();
}

std::string ProcFs::PidDir(pid_t pid) const { return root_ + "/" + std::to_string(pid); }

StatusOr<ProcessStatus> ProcFs::Status(pid_t pid) const {
  auto content = ReadFileToString(PidDir(pid) + "/status");
  if (!content.ok()) return NotFoundError("no process with pid " + std::to_string(pid));
  ProcessStatus st;
  std::istringstream lines(*content);
  std::string line;
  while (std::getline(lines, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    std::istringstream value(line.substr(colon + 1));
    if (key == "Name") {
      value >> std::ws;
      std::getline(value, st.name);
    } else if (key == "State") {
      value >> st.state;
    } else if (key == "Tgid") {
      value >> st.tgid;
    } else if (key == "PPid") {
      value >> st.ppid;
    } else if (key == "Uid") {
      for (auto& u : st.uid) value >> u;
    } else if (key == "Gid") {
      for (auto& g : st.gid) value >> g;
    } else if (key == "NSpid") {
      pid_t p;
      while (value >> p) st.ns_pids.push_back(p);
    }
  }
  return st;
}

bool ProcFs::IsAlive(pid_t pid) const {
  if (pid <= 0) return false;
  auto st = Status(pid);
  return st.ok() && st->state != 'Z' && st->state != 'X';
}

std::optional<Mapping> ParseMapsLine(const std::string& line) {
  // 7f0c1c000000-7f0c1c021000 r-xp 00000000 08:01 1234   /usr/lib/libpython3.11.so.1.0
  Mapping m;
  std::istringstream in(line);
  std::string range;
  if (!(in >> range >> m.perms)) return std::nullopt;
  std::string offset_hex;
  if (!(in >> offset_hex >> m.dev >> m.inode)) return std::nullopt;
  auto dash = range.find('-');
  auto colon = m.dev.find(':');
  if (dash == std::string::npos || colon == std::string::npos) return std::nullopt;
  try {
    m.start = std::stoull(range.substr(0, dash), nullptr, 16);
    m.end = std::stoull(range.substr(dash + 1), nullptr, 16);
    m.offset = std::stoull(offset_hex, nullptr, 16);
    m.dev_major = static_cast<unsigned>(std::stoul(m.dev.substr(0, colon), nullptr, 16));
    m.dev_minor = static_cast<unsigned>(std::stoul(m.dev.substr(colon + 1), nullptr, 16));
  } catch (...) {
    return std::nullopt;
  }
  in >> std::ws;
  std::getline(in, m.path);
  return m;
}

StatusOr<std::vector<Mapping>> ProcFs::Maps(pid_t pid) const {
  auto content = ReadFileToString(PidDir(pid) + "/maps");
  if (!content.ok()) return content.status();
  std::vector<Mapping> out;
  std::istringstream lines(*content);
  std::string line;
  while (std::getline(lines, line)) {
    if (auto m = ParseMapsLine(line)) out.push_back(std::move(*m));
  }
  return out;
}

StatusOr<std::string> ProcFs::ExeLink(pid_t pid) const {
  std::string link = PidDir(pid) + "/exe";
  char buf[4096];
  ssize_t n = readlink(link.c_str(), buf, sizeof(buf) - 1);
  if (n < 0) return ErrnoToStatus(errno, "cannot read " + link);
  return std::string(buf, static_cast<size_t>(n));
}

StatusOr<std::string> ProcFs::ExePath(pid_t pid) const {
  TS_ASSIGN_OR_RETURN(std::string path, ExeLink(pid));
  // A replaced binary shows as "/path (deleted)"; the inode is still reachable via /exe.
  const std::string deleted = " (deleted)";
  if (path.size() > deleted.size() &&
      path.compare(path.size() - deleted.size(), deleted.size(), deleted) == 0) {
    path.resize(path.size() - deleted.size());
  }
  return path;
}

std::optional<TaskInfo> ParseStat(const std::string& content) {
  // comm may contain spaces and parentheses: it spans from the first '(' to the last ')'.
  auto open = content.find('(');
  auto close = content.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
  TaskInfo t;
  try {
    t.tid = static_cast<pid_t>(std::stol(content.substr(0, open)));
  } catch (...) {
    return std::nullopt;
  }
  t.comm = content.substr(open + 1, close - open - 1);
  std::istringstream rest(content.substr(close + 1));
  std::string field;
  // Fields after comm start at index 3 (state); starttime is field 22.
  for (int index = 3; index <= 22; ++index) {
    if (!(rest >> field)) return std::nullopt;
  }
  try {
    t.start_ticks = std::stoull(field);
  } catch (...) {
    return std::nullopt;
  }
  return t;
}

StatusOr<std::vector<TaskInfo>> ProcFs::Tasks(pid_t pid) const {
  std::string dir = PidDir(pid) + "/task";
  DIR* d = opendir(dir.c_str());
  if (!d) return ErrnoToStatus(errno, "cannot list " + dir);
  std::vector<TaskInfo> out;
  while (dirent* entry = readdir(d)) {
    if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
    auto stat = ReadFileToString(dir + "/" + entry->d_name + "/stat");
    if (!stat.ok()) continue;  // the task exited while we listed
    if (auto t = ParseStat(*stat)) out.push_back(std::move(*t));
  }
  closedir(d);
  std::sort(out.begin(), out.end(),
            [](const TaskInfo& a, const TaskInfo& b) { return a.tid < b.tid; });
  return out;
}

StatusOr<std::string> ProcFs::TaskComm(pid_t pid, pid_t tid) const {
  auto comm = ReadFileToString(PidDir(pid) + "/task/" + std::to_string(tid) + "/comm");
  if (!comm.ok()) return comm.status();
  std::string s = *comm;
  while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
  return s;
}

StatusOr<std::string> ProcFs::Cmdline(pid_t pid) const {
  auto raw = ReadFileToString(PidDir(pid) + "/cmdline");
  if (!raw.ok()) return raw.status();
  std::string s = *raw;
  while (!s.empty() && s.back() == '\0') s.pop_back();
  std::replace(s.begin(), s.end(), '\0', ' ');
  return s;
}

StatusOr<uint64_t> ProcFs::NamespaceInode(pid_t pid, const std::string& kind) const {
  std::string path = (pid == 0 ? root_ + "/self" : PidDir(pid)) + "/ns/" + kind;
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return ErrnoToStatus(errno, "cannot stat " + path);
  return static_cast<uint64_t>(st.st_ino);
}

bool ProcFs::InOtherMountNamespace(pid_t pid) const {
  auto theirs = NamespaceInode(pid, "mnt");
  auto host = NamespaceInode(1, "mnt");
  if (!host.ok()) host = NamespaceInode(0, "mnt");
  return theirs.ok() && host.ok() && *theirs != *host;
}

static uint64_t ClockNs(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

uint64_t MonotonicNowNs() { return ClockNs(CLOCK_MONOTONIC); }

}  // namespace threadscope::target

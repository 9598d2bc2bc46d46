// Who may trace what: the daemon's stand-in for ptrace_may_access, checked on a fake /proc.
#include "daemon/service/peer_auth.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

namespace threadscope::service {
namespace {

class FakeProc {
 public:
  FakeProc() : root_("/tmp/ts_fakeproc_" + std::to_string(getpid())) {
    mkdir(root_.c_str(), 0755);
  }
  ~FakeProc() { std::system(("rm -rf " + root_).c_str()); }
  // A process owned by uid (status file and /proc/PID directory). False if chown failed.
  bool AddProcess(int pid, int uid, int ppid) {
    std::string dir = root_ + "/" + std::to_string(pid);
    mkdir(dir.c_str(), 0755);
    std::ofstream(dir + "/status") << "Name:\tpython3\nState:\tS (sleeping)\nTgid:\t" << pid
                                   << "\nPPid:\t" << ppid << "\nUid:\t" << uid << "\t" << uid
                                   << "\t" << uid << "\t" << uid << "\nGid:\t" << uid << "\t"
                                   << uid << "\t" << uid << "\t" << uid << "\n";
    return chown(dir.c_str(), static_cast<uid_t>(uid), static_cast<gid_t>(uid)) == 0;
  }
  void SetYama(int scope) {
    std::string dir = root_ + "/sys/kernel/yama";
    std::system(("mkdir -p " + dir).c_str());
    std::ofstream(dir + "/ptrace_scope") << scope << "\n";
  }
  target::ProcFs proc() const { return target::ProcFs(root_); }

 private:
  std::string root_;
};

TEST(PeerRegistryTest, KnowsOnlyFdPeers) {
  PeerRegistry r;
  r.Add(7, {123, 1000, 1000, false});
  EXPECT_EQ(r.Lookup("fd:7")->uid, 1000u);
  EXPECT_FALSE(r.Lookup("fd:8"));
  EXPECT_FALSE(r.Lookup("unix:/x"));
  EXPECT_FALSE(r.Lookup("fd:x"));
  r.Remove(7);
  EXPECT_FALSE(r.Lookup("fd:7"));
}

TEST(PeerAuthTest, OwnerMayTraceOthersMayNot) {
  FakeProc fake;
  if (!fake.AddProcess(500, 1000, 1) || !fake.AddProcess(600, 0, 1)) {
    GTEST_SKIP() << "needs root outside a sandbox to give fixture files another owner";
  }
  fake.AddProcess(501, 1000, 500);  // a child of 500
  auto proc = fake.proc();
  PeerCredentials user{0, 1000, 1000, false};
  EXPECT_TRUE(CheckMayTrace(user, 500, proc).ok()) << CheckMayTrace(user, 500, proc).ToString();
  Status denied = CheckMayTrace(user, 600, proc);
  EXPECT_EQ(denied.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(denied.message().find("uid 1000 may not trace pid 600"), std::string::npos);
  EXPECT_TRUE(CheckMayTrace(PeerCredentials{0, 0, 0, false}, 600, proc).ok());
  EXPECT_TRUE(CheckMayTrace(PeerCredentials{0, 1000, 1000, true}, 600, proc).ok());  // in-process
  EXPECT_EQ(CheckMayTrace(user, 700, proc).code(), StatusCode::kNotFound);

  // Yama 1: only descendants of the caller.
  fake.SetYama(1);
  PeerCredentials parent{500, 1000, 1000, false};
  EXPECT_TRUE(CheckMayTrace(parent, 501, proc).ok());
  PeerCredentials stranger{999, 1000, 1000, false};
  Status yama = CheckMayTrace(stranger, 501, proc);
  EXPECT_EQ(yama.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(yama.message().find("ptrace_scope=1"), std::string::npos);
  fake.SetYama(3);
  EXPECT_EQ(CheckMayTrace(parent, 501, proc).code(), StatusCode::kPermissionDenied);
}

TEST(PeerAuthTest, NonDumpableTargetsAreRootOnly) {
  FakeProc fake;
  // Status says uid 1000, but the /proc directory belongs to root: that is what the kernel shows
  // for a process that is not dumpable.
  fake.AddProcess(800, 1000, 1);
  std::string dir = "/tmp/ts_fakeproc_" + std::to_string(getpid()) + "/800";
  if (chown(dir.c_str(), 0, 0) != 0) GTEST_SKIP() << "needs root to set fixture ownership";
  Status s = CheckMayTrace(PeerCredentials{0, 1000, 1000, false}, 800, fake.proc());
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("not dumpable"), std::string::npos);
}

}  // namespace
}  // namespace threadscope::service

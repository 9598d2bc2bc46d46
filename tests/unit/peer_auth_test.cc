// Who may trace what: the daemon's stand-in for ptrace_may_access, checked on a fake /proc.
#include "daemon/service/peer_auth.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "tests/unit/test_env.h"

namespace threadscope::service {
namespace {

class FakeProc {
 public:
  FakeProc() : root_(testing::TestDir("fakeproc")) {}
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
  const std::string& root() const { return root_; }

 private:
  std::string root_;
};

PeerCredentials User(pid_t pid, uid_t uid) {
  PeerCredentials c;
  c.pid = pid;
  c.uid = uid;
  c.gid = uid;
  return c;
}

TEST(PeerRegistryTest, KnowsOnlyTheSocketItAccepted) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  PeerRegistry r;
  PeerCredentials c = User(123, 1000);
  c.client = "fd:x#1";
  EXPECT_FALSE(r.Add(sv[0], c));
  std::string peer = "fd:" + std::to_string(sv[0]);
  ASSERT_TRUE(r.Lookup(peer));
  EXPECT_EQ(r.Lookup(peer)->uid, 1000u);
  EXPECT_FALSE(r.Lookup("fd:" + std::to_string(sv[1])));
  EXPECT_FALSE(r.Lookup("unix:/x"));
  EXPECT_FALSE(r.Lookup("fd:x"));
  EXPECT_FALSE(r.Lookup("fd:"));
  EXPECT_FALSE(r.Lookup("fd:99999999999999999999"));
  EXPECT_TRUE(r.Prune().empty());
  // A new connection on a number not pruned yet: the one it replaces is reported gone.
  PeerCredentials again = c;
  again.client = "fd:x#0";
  EXPECT_EQ(r.Add(sv[0], again), std::optional<std::string>("fd:x#1"));
  r.Add(sv[0], c);
  // The connection closes and its number is reused by another file: not the same peer.
  close(sv[0]);
  int reused = dup(sv[1]);
  ASSERT_EQ(reused, sv[0]);
  EXPECT_FALSE(r.Lookup(peer));
  EXPECT_EQ(r.Prune(), std::vector<std::string>{"fd:x#1"});
  EXPECT_EQ(r.size(), 0u);
  close(reused);
  close(sv[1]);
}

TEST(PeerAuthTest, IdentifiesThePeerOfARealSocket) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  auto peer = IdentifyPeer(sv[0], target::ProcFs(), "c1");
  ASSERT_TRUE(peer.ok()) << peer.status().ToString();
  EXPECT_EQ(peer->uid, getuid());
  EXPECT_EQ(peer->client, "c1");
  EXPECT_EQ(peer->pid_ns_level, 0u);
  if (peer->process) {  // SO_PEERPIDFD (Linux 6.5+)
    EXPECT_EQ(peer->pid, getpid());
    EXPECT_TRUE(peer->process->Alive());
  }
  EXPECT_EQ(ResolveTargetPid(*peer, 1234, target::ProcFs()).value(), 1234);
  EXPECT_EQ(ResolveTargetPid(*peer, -3, target::ProcFs()).status().code(),
            StatusCode::kInvalidArgument);
  close(sv[0]);
  close(sv[1]);
}

TEST(PeerAuthTest, OwnerMayTraceOthersMayNot) {
  FakeProc fake;
  if (!fake.AddProcess(500, 1000, 1) || !fake.AddProcess(600, 0, 1)) {
    GTEST_SKIP() << "needs root outside a sandbox to give fixture files another owner";
  }
  fake.AddProcess(501, 1000, 500);  // a child of 500
  auto proc = fake.proc();
  PeerCredentials user = User(0, 1000);
  EXPECT_TRUE(CheckMayTrace(user, 500, proc).ok()) << CheckMayTrace(user, 500, proc).ToString();
  Status denied = CheckMayTrace(user, 600, proc);
  EXPECT_EQ(denied.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(denied.message().find("uid 1000 may not trace pid 600"), std::string::npos);
  // uid 0 alone is not "may trace anything" (root in a container); uid 0 may trace uid 0's.
  EXPECT_TRUE(CheckMayTrace(User(0, 0), 600, proc).ok());
  EXPECT_EQ(CheckMayTrace(User(0, 0), 500, proc).code(), StatusCode::kPermissionDenied);
  PeerCredentials privileged = User(0, 0);
  privileged.privileged = true;
  EXPECT_TRUE(CheckMayTrace(privileged, 500, proc).ok());
  PeerCredentials in_process = User(0, 1000);
  in_process.trusted = true;
  EXPECT_TRUE(CheckMayTrace(in_process, 600, proc).ok());
  EXPECT_EQ(CheckMayTrace(user, 700, proc).code(), StatusCode::kNotFound);

  // Yama 1: only descendants of the caller.
  fake.SetYama(1);
  PeerCredentials parent = User(500, 1000);
  EXPECT_TRUE(CheckMayTrace(parent, 501, proc).ok());
  PeerCredentials stranger = User(999, 1000);
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
  std::string dir = fake.root() + "/800";
  if (chown(dir.c_str(), 0, 0) != 0) GTEST_SKIP() << "needs root to set fixture ownership";
  Status s = CheckMayTrace(User(0, 1000), 800, fake.proc());
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("not dumpable"), std::string::npos);
}

}  // namespace
}  // namespace threadscope::service

// The dump's layouts against every interpreter of the matrix: a live process
// (testdata/dump_objects.py) prints facts about its own objects and threads, and the reader must
// find the same ones in its memory, without stopping it (--nonblocking's path, no ptrace stop;
// reading a child of the same user needs no root).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "daemon/dump/analysis.h"
#include "daemon/dump/dump.h"
#include "daemon/dump/layout.h"
#include "daemon/dump/objects.h"
#include "daemon/target/disasm.h"
#include "daemon/target/procfs.h"
#include "daemon/target/py_code.h"
#include "daemon/target/python_process.h"
#include "tests/unit/interpreters.h"

namespace threadscope::dump {
namespace {

using ::threadscope::interpreters::Interpreter;

// The script's output, and its process.
class Target {
 public:
  explicit Target(const Interpreter& in) {
    std::string cmd = "exec " + interpreters::CommandLine(
                                    in, {"tests/unit/testdata/dump_objects.py"});
    int fds[2];
    if (pipe(fds) != 0) return;
    child_ = fork();
    if (child_ == 0) {
      dup2(fds[1], 1);
      close(fds[0]);
      close(fds[1]);
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(fds[1]);
    FILE* f = fdopen(fds[0], "r");
    char buf[4096];
    while (f && fgets(buf, sizeof(buf), f)) {
      std::string line(buf);
      while (!line.empty() && line.back() == '\n') line.pop_back();
      if (line == "ready") break;
      lines_.push_back(line);
    }
    if (f) fclose(f);
  }
  ~Target() {
    if (child_ > 0) {
      kill(child_, SIGKILL);
      waitpid(child_, nullptr, 0);
    }
  }
  const std::vector<std::string>& lines() const { return lines_; }
  // The pid the script printed (through tools/in-root it is the same process).
  pid_t pid() const {
    for (const auto& l : lines_) {
      if (l.rfind("pid ", 0) == 0) return std::stoi(l.substr(4));
    }
    return 0;
  }
  std::string Get(const std::string& key) const {
    for (const auto& l : lines_) {
      if (l.rfind(key + " ", 0) == 0) return l.substr(key.size() + 1);
    }
    return "";
  }

 private:
  pid_t child_ = -1;
  std::vector<std::string> lines_;
};

uint64_t Hex(const std::string& s) { return std::stoull(s, nullptr, 16); }

std::string FromHex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

const ThreadReport* ByTid(const DumpReport& r, pid_t tid) {
  for (const auto& t : r.threads) {
    if (t.tid == tid) return &t;
  }
  return nullptr;
}

TEST(DumpLiveTest, EveryInterpreterOfTheMatrix) {
  auto matrix = interpreters::Load();
  ASSERT_TRUE(matrix.ok()) << matrix.status().ToString();
  auto dis = target::Disassembler::Create();
  ASSERT_TRUE(dis.ok());
  int checked = 0;
  for (const auto& in : *matrix) {
    if (!in.present()) {
      if (in.required) {
        ADD_FAILURE() << in.label << " is required: " << in.missing;
      } else {
        std::fprintf(stderr, "%s\n", in.SkipLine().c_str());
      }
      continue;
    }
    SCOPED_TRACE(in.label);
    Target t(in);
    ASSERT_GT(t.pid(), 0) << "the script did not start";
    target::ProcFs proc;
    auto inspected = target::InspectPythonProcess(proc, **dis, t.pid());
    ASSERT_TRUE(inspected.ok()) << inspected.status().ToString();
    const auto& info = inspected->info;
    auto layout = ResolveLayout(*inspected->interpreter_elf, info.interpreter.load_bias,
                                info.version, info.free_threaded);
    ASSERT_TRUE(layout.ok()) << layout.status().ToString();
    target::ProcessMemory memory(t.pid());
    ObjectReader o(memory, *layout);

    // Objects.
    int facts = 0;
    for (const auto& line : t.lines()) {
      std::istringstream s(line);
      std::string kind;
      s >> kind;
      if (kind == "attr") {
        std::string obj, name, type, want;
        s >> obj >> name >> type >> want;
        auto v = o.GetAttr(Hex(obj), name);
        ASSERT_TRUE(v) << line;
        if (type == "str") {
          EXPECT_EQ(o.Str(*v).value_or("?"), want) << line;
        } else {
          EXPECT_EQ(o.Int(*v).value_or(-999), std::stoll(want)) << line;
        }
        ++facts;
      } else if (kind == "int") {
        std::string obj, want;
        s >> obj >> want;
        EXPECT_EQ(static_cast<uint64_t>(o.Int(Hex(obj)).value_or(0)), std::stoull(want)) << line;
        ++facts;
      } else if (kind == "str") {
        std::string obj, hex;
        s >> obj >> hex;
        EXPECT_EQ(o.Str(Hex(obj)).value_or("?"), FromHex(hex)) << line;
        ++facts;
      } else if (kind == "type") {
        std::string obj, want;
        s >> obj >> want;
        EXPECT_EQ(o.TypeNameOf(Hex(obj)), want) << line;
        ++facts;
      } else if (kind == "lock") {
        std::string obj;
        int locked;
        s >> obj >> locked;
        auto l = o.Lock(Hex(obj));
        ASSERT_TRUE(l) << line;
        EXPECT_EQ(l->type, LockType::kLock);
        EXPECT_EQ(l->locked, locked == 1) << line;
        ++facts;
      }
    }
    EXPECT_GE(facts, 9);

    // Threads, through the library's own path (no stop).
    DumpOptions options;
    options.nonblocking = true;
    auto report = DumpProcess(t.pid(), options);
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    for (const auto& n : report->notes) std::fprintf(stderr, "%s note: %s\n", in.label.c_str(), n.c_str());
    const pid_t main_tid = std::stoi(t.Get("tid main"));
    const ThreadReport* main = ByTid(*report, main_tid);
    ASSERT_TRUE(main);
    EXPECT_TRUE(main->is_main);
    EXPECT_EQ(main->state, ThreadState::kSleeping);
    ASSERT_FALSE(main->stack.empty());
    EXPECT_EQ(main->stack[0].function, "main_sleeps");
    // `with L:` in main_sleeps, and `held`, acquired by the module's code below it on the stack
    // (inferred: acquire_call).
    ASSERT_EQ(main->holds.size(), 2u);
    for (const auto& h : main->holds) {
      if (h.lock_id == t.Get("L")) {
        EXPECT_EQ(h.source, OwnerSource::kWithStatement);
      } else {
        EXPECT_EQ(h.lock_id, t.Get("held"));
        EXPECT_EQ(h.source, OwnerSource::kAcquireCall);
      }
    }

    const ThreadReport* holder = ByTid(*report, std::stoi(t.Get("tid holder")));
    ASSERT_TRUE(holder);
    EXPECT_EQ(holder->name, "holder-thread");
    EXPECT_EQ(holder->state, ThreadState::kConditionWait);
    ASSERT_TRUE(holder->waiting_for);
    EXPECT_EQ(holder->waiting_for->kind, WaitKind::kEvent);
    ASSERT_EQ(holder->holds.size(), 1u);
    EXPECT_EQ(holder->holds[0].lock_id, t.Get("R"));

    const ThreadReport* waiter = ByTid(*report, std::stoi(t.Get("tid waiter")));
    ASSERT_TRUE(waiter);
    EXPECT_EQ(waiter->name, "waiter-thread");
    EXPECT_EQ(waiter->state, ThreadState::kLockWait);
    ASSERT_TRUE(waiter->waiting_for);
    EXPECT_EQ(waiter->waiting_for->lock_id, t.Get("held"));
    std::fprintf(stderr, "checked %s: CPython %s, %s\n", in.label.c_str(),
                 report->python_version.c_str(), report->layout_source.c_str());
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

}  // namespace
}  // namespace threadscope::dump

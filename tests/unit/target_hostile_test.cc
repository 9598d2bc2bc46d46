// Target discovery on hostile input: crafted and corrupt ELF files (security review H2), files
// that are not what they claim to be (FIFOs, ttys, directories, sparse giants: H3), paths that
// try to escape a container's root, and planning that a binary makes slow. Every case must end
// in a clear error or a bounded answer: no crash, no hang, no unbounded allocation. The same
// tests run under ASan+UBSan (bazel test --config=asan).
// Over 600 lines: one case per hostile input the security review lists, each with the file it
// builds; they share the ELF builder and the fixtures below.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>

#include "daemon/target/budget.h"
#include "daemon/target/cpython.h"
#include "daemon/target/disasm.h"
#include "daemon/target/elf_file.h"
#include "daemon/target/procfs.h"
#include "daemon/target/py_code.h"
#include "daemon/target/py_layout.h"
#include "daemon/target/python_process.h"
#include "daemon/target/target_file.h"
#include "tests/unit/elf_builder.h"

namespace threadscope::target {
namespace {

using testing::ElfBuilder;
using testing::FakePython;
using testing::FakePythonOptions;
using testing::MakeFakePython;

std::string TempDir() {
  const char* t = std::getenv("TEST_TMPDIR");
  std::string base = t && *t ? t : "/tmp";
  std::string dir = base + "/hostile_XXXXXX";
  if (!mkdtemp(dir.data())) std::abort();
  return dir;
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

template <typename T>
T Get(const std::string& b, size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof(T));
  return v;
}
template <typename T>
void Put(std::string* b, size_t off, T v) {
  std::memcpy(b->data() + off, &v, sizeof(T));
}

// Offset of the section header of the section called `name` in a built image.
size_t SectionHeader(const std::string& b, const std::string& name) {
  auto eh = Get<Elf64_Ehdr>(b, 0);
  auto shstr = Get<Elf64_Shdr>(b, eh.e_shoff + eh.e_shstrndx * sizeof(Elf64_Shdr));
  for (size_t i = 0; i < eh.e_shnum; ++i) {
    size_t at = eh.e_shoff + i * sizeof(Elf64_Shdr);
    auto sh = Get<Elf64_Shdr>(b, at);
    if (name == b.c_str() + shstr.sh_offset + sh.sh_name) return at;
  }
  std::abort();
}

// Appends a program header (there is room: the builder leaves the first page to headers).
void AddLoad(std::string* b, uint64_t vaddr, uint64_t offset, uint64_t filesz) {
  auto eh = Get<Elf64_Ehdr>(*b, 0);
  Elf64_Phdr p{};
  p.p_type = PT_LOAD;
  p.p_flags = PF_R;
  p.p_vaddr = vaddr;
  p.p_offset = offset;
  p.p_filesz = filesz;
  p.p_memsz = filesz;
  Put(b, eh.e_phoff + eh.e_phnum * sizeof(Elf64_Phdr), p);
  eh.e_phnum += 1;
  Put(b, 0, eh);
}

class HostileElfTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = Disassembler::Create();
    ASSERT_TRUE(d.ok());
    dis_ = std::move(d).value();
  }
  std::unique_ptr<Disassembler> dis_;
};

TEST_F(HostileElfTest, TheFakePythonIsUnderstood) {
  FakePythonOptions o;
  o.build_id = "\x01\x02\xab";
  FakePython f = MakeFakePython(o);
  auto elf = ElfFile::FromBytes(f.bytes, "fake-python");
  ASSERT_TRUE(elf.ok()) << elf.status().ToString();
  EXPECT_EQ((*elf)->build_id(), "0102ab");
  EXPECT_EQ((*elf)->needed(), std::vector<std::string>{"libc.so.6"});
  EXPECT_EQ((*elf)->PltStubName(f.sem_wait_stub), "sem_wait");
  EXPECT_TRUE(DefinesCPythonRuntime(**elf));
  auto v = DetectPythonVersion(**elf, *dis_, "python");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->ToString(), "3.9.18");
  auto tables = FindMethodTables(**elf);
  EXPECT_EQ(FindMethod(tables, "start_new_thread", {"allocate_lock", "get_ident"}),
            f.start_new_thread);
  EXPECT_EQ(FindTypeNew(**elf, f.lock_methods), f.lock_new);
  auto extent = (*elf)->FunctionExtent(f.waiter);  // from .eh_frame alone
  ASSERT_TRUE(extent);
  EXPECT_EQ(extent->first, f.waiter);
  auto sites = FindImportCallSitesBounded(**elf, *dis_, "sem_wait");
  ASSERT_EQ(sites.sites.size(), 3u);  // two through the PLT, one through the GOT
  EXPECT_FALSE(sites.truncated);
  EXPECT_EQ(sites.sites[0].call, f.waiter);
  EXPECT_EQ(sites.sites[0].function, f.waiter);
  EXPECT_EQ(sites.sites[0].return_site, f.waiter + 7);  // the jne after test
  EXPECT_EQ(sites.sites[2].call, f.waiter + 18);
}

TEST_F(HostileElfTest, PositionIndependentAndNewerVariants) {
  FakePythonOptions o;
  o.pie = true;
  o.py_version_symbol = true;
  o.full_symbols = true;
  FakePython f = MakeFakePython(o);
  auto elf = ElfFile::FromBytes(f.bytes, "fake-libpython");
  ASSERT_TRUE(elf.ok()) << elf.status().ToString();
  EXPECT_TRUE((*elf)->is_shared_object());
  EXPECT_TRUE((*elf)->has_symtab());
  EXPECT_EQ(DetectPythonVersion(**elf, *dis_, "x")->ToString(), "3.11.7");
  auto tables = FindMethodTables(**elf);
  EXPECT_EQ(FindMethod(tables, "start_new_thread", {"allocate_lock", "get_ident"}),
            f.start_new_thread);
  EXPECT_EQ(FindTypeNew(**elf, f.lock_methods), f.lock_new);
  EXPECT_EQ((*elf)->FindSymbol("waiter")->value, f.waiter);
}

// Review H2: a PT_LOAD whose p_offset lies past the end of the file. Before: strnlen on a wild
// pointer (SIGSEGV) from DetectPythonVersion.
TEST_F(HostileElfTest, LoadSegmentPastEndOfFileIsAnErrorNotACrash) {
  ElfBuilder b;
  uint64_t at = b.text_end();
  std::string code = ElfBuilder::MovEdx(0x200000) + ElfBuilder::MovEcx(0x200000);
  code += ElfBuilder::Call(at + code.size(), at) + ElfBuilder::Ret();
  b.Text(code);
  b.Symbol("Py_GetVersion", at, 32, true);
  std::string bytes = b.Build();
  AddLoad(&bytes, 0x200000, 0x7fff00000000, 0x1000);
  auto elf = ElfFile::FromBytes(bytes, "libpython3.9.so");
  ASSERT_TRUE(elf.ok()) << elf.status().ToString();
  EXPECT_TRUE((*elf)->BytesAt(0x200000, 1).empty());
  EXPECT_FALSE((*elf)->CStringAt(0x200000));
  auto v = DetectPythonVersion(**elf, *dis_, "not-a-python-name");
  EXPECT_EQ(v.status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(HostileElfTest, OffsetsNearTheTopOfTheAddressSpaceDoNotWrap) {
  std::string bytes = ElfBuilder().Build();
  AddLoad(&bytes, 0x7000000, 0xfffffffffffff000, 0x2000);
  AddLoad(&bytes, 0xfffffffffffff000, 0x1000, 0x2000);
  auto elf = ElfFile::FromBytes(bytes, "wrap");
  ASSERT_TRUE(elf.ok()) << elf.status().ToString();
  EXPECT_TRUE((*elf)->BytesAt(0x7000000, 8).empty());
  EXPECT_TRUE((*elf)->BytesAt(0xfffffffffffffff8, 16).empty());
  EXPECT_FALSE((*elf)->PointerAt(0xfffffffffffffffc));
  EXPECT_FALSE((*elf)->CStringAt(0xffffffffffffffff));
}

// Found by elf_fuzzer: no program headers at all (memcpy to an empty table's null data()).
TEST_F(HostileElfTest, NoProgramHeaders) {
  std::string bytes = MakeFakePython().bytes;
  auto eh = Get<Elf64_Ehdr>(bytes, 0);
  eh.e_phnum = 0;
  Put(&bytes, 0, eh);
  auto elf = ElfFile::FromBytes(bytes, "x");
  ASSERT_TRUE(elf.ok()) << elf.status().ToString();
  EXPECT_TRUE((*elf)->BytesAt(ElfBuilder::kText, 1).empty());
  EXPECT_TRUE(FindMethodTables(**elf).empty());
}

TEST_F(HostileElfTest, SectionNameTableIndexOutOfRange) {
  std::string bytes = ElfBuilder().Build();
  auto eh = Get<Elf64_Ehdr>(bytes, 0);
  eh.e_shstrndx = 0xfff0;
  Put(&bytes, 0, eh);
  auto elf = ElfFile::FromBytes(bytes, "x");
  EXPECT_EQ(elf.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(elf.status().message().find("section 65520 of"), std::string::npos)
      << elf.status().message();
}

TEST_F(HostileElfTest, SectionLinkOutOfRange) {
  std::string bytes = MakeFakePython().bytes;
  size_t dynsym = SectionHeader(bytes, ".dynsym");
  auto sh = Get<Elf64_Shdr>(bytes, dynsym);
  sh.sh_link = 0xffff;
  Put(&bytes, dynsym, sh);
  auto elf = ElfFile::FromBytes(bytes, "x");
  EXPECT_EQ(elf.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(elf.status().message().find("links to section 65535"), std::string::npos);
}

// Review H2: names past the end of their string table, and one that runs off the end of it
// unterminated ("take_gil." at the end of the file), must not be read past the table.
TEST_F(HostileElfTest, StringOffsetsPastTheirTable) {
  ElfBuilder b;
  b.Symbol("take_gil.part.0", b.Text(ElfBuilder::Ret()), 1, true);
  b.Symbol("victim", b.Text(ElfBuilder::Ret()), 1, true);
  std::string bytes = b.Build();
  size_t dynstr = SectionHeader(bytes, ".dynstr");
  auto str = Get<Elf64_Shdr>(bytes, dynstr);
  // Cut the table in the middle of "take_gil.part.0": the name is no longer terminated.
  size_t name_at = bytes.find("take_gil.part.0", str.sh_offset) - str.sh_offset;
  str.sh_size = name_at + 9;
  Put(&bytes, dynstr, str);
  // And point "victim" far past the table.
  size_t dynsym = SectionHeader(bytes, ".dynsym");
  auto syms = Get<Elf64_Shdr>(bytes, dynsym);
  auto victim = Get<Elf64_Sym>(bytes, syms.sh_offset + 2 * sizeof(Elf64_Sym));
  victim.st_name = 0x7ffffff0;
  Put(&bytes, syms.sh_offset + 2 * sizeof(Elf64_Sym), victim);
  auto elf = ElfFile::FromBytes(bytes, "x");
  ASSERT_TRUE(elf.ok()) << elf.status().ToString();
  EXPECT_TRUE((*elf)->FindClones("take_gil").empty());
  EXPECT_FALSE((*elf)->FindSymbol("take_gil."));
  EXPECT_FALSE((*elf)->FindSymbol("victim"));
}

// Review H2: .data claiming 2^62 bytes. Before: ~2^59 iterations of FindMethodTables.
TEST_F(HostileElfTest, HugeDataSectionIsScannedOnlyWhereTheFileHasBytes) {
  std::string bytes = MakeFakePython().bytes;
  size_t data = SectionHeader(bytes, ".data");
  auto sh = Get<Elf64_Shdr>(bytes, data);
  sh.sh_size = uint64_t{1} << 62;
  Put(&bytes, data, sh);
  ElfOptions options;
  options.budget = Budget::WithWorkLimit(uint64_t{1} << 40);
  auto elf = ElfFile::FromBytes(bytes, "x", options);
  ASSERT_TRUE(elf.ok()) << elf.status().ToString();
  EXPECT_LE((*elf)->FindSection(".data")->size, bytes.size());
  uint64_t before = options.budget->spent();
  auto tables = FindMethodTables(**elf);
  FindTypeNew(**elf, 0x1234);
  EXPECT_FALSE(tables.empty());
  // One unit per 8 bytes of the file at most, twice: a file of ~70 KiB, not 2^62 bytes.
  EXPECT_LT(options.budget->spent() - before, bytes.size() / 4 + 1000);
  EXPECT_TRUE(options.budget->status().ok());
}

TEST_F(HostileElfTest, HugeFunctionSymbolDecodesOnlyWhatTheFileHas) {
  ElfBuilder b;
  uint64_t at = b.Text(std::string(4096, '\x90'));  // nops
  b.Symbol("Py_GetVersion", at, uint64_t{1} << 40, true);
  auto elf = ElfFile::FromBytes(b.Build(), "x");
  ASSERT_TRUE(elf.ok()) << elf.status().ToString();
  auto code = DecodeFunction(**elf, *dis_, at);
  EXPECT_EQ(code.size(), 4096u);
  EXPECT_EQ((*elf)->FunctionContaining(at + 100)->value, at);
  EXPECT_FALSE((*elf)->FunctionContaining(at - 1));
}

TEST_F(HostileElfTest, DecodingIsCappedInInstructions) {
  std::string nops(kMaxDecodedInstructions + 1000, '\x90');
  EXPECT_EQ(dis_->Decode(nops, 0x1000).size(), kMaxDecodedInstructions);
  EXPECT_EQ(dis_->Decode(nops, 0x1000, 10).size(), 10u);
}

// Review H2: a giant function full of calls to sem_wait@plt. Before: the whole function was
// decoded again for every call (quadratic). Now once, and the sites are capped and say so.
TEST_F(HostileElfTest, CallHeavyGiantFunctionIsSearchedOnceAndCapped) {
  ElfBuilder b;
  uint64_t stub = b.Import("sem_wait");
  constexpr size_t kCalls = 60000;  // under kMaxCallCandidates: the site cap applies
  uint64_t start = b.text_end();
  std::string code;
  code.reserve(kCalls * 5);
  for (size_t i = 0; i < kCalls; ++i) code += ElfBuilder::Call(start + 5 * i, stub);
  b.Text(code);
  b.Symbol("giant", start, code.size(), true);
  ElfOptions options;
  options.budget = Budget::WithWorkLimit(uint64_t{1} << 40);
  auto elf = ElfFile::FromBytes(b.Build(), "x", options);
  ASSERT_TRUE(elf.ok()) << elf.status().ToString();
  uint64_t before = options.budget->spent();
  auto sites = FindImportCallSitesBounded(**elf, *dis_, "sem_wait");
  EXPECT_EQ(sites.sites.size(), kMaxImportCallSites);
  EXPECT_TRUE(sites.truncated);
  EXPECT_NE(sites.truncated_reason.find(std::to_string(kMaxImportCallSites) +
                                        " call sites of sem_wait kept"),
            std::string::npos)
      << sites.truncated_reason;
  // One decode of the function plus one scan of the code, not one decode per call.
  EXPECT_LT(options.budget->spent() - before, 2 * kCalls + code.size() / 8 + 10000);
  EXPECT_EQ(FindImportCallSites(**elf, *dis_, "sem_wait").size(), kMaxImportCallSites);
}

TEST_F(HostileElfTest, BudgetStopsPlanningWithAClearError) {
  ElfBuilder b;
  uint64_t start = b.Text(std::string(1 << 16, '\x90'));
  b.Symbol("f", start, 1 << 16, true);
  std::string bytes = b.Build();
  // What parsing costs, then 1000 units more.
  ElfOptions measure;
  measure.budget = Budget::WithWorkLimit(uint64_t{1} << 40);
  ASSERT_TRUE(ElfFile::FromBytes(bytes, "x", measure).ok());
  ElfOptions options;
  options.budget = Budget::WithWorkLimit(measure.budget->spent() + 1000);
  auto elf = ElfFile::FromBytes(bytes, "x", options);
  ASSERT_TRUE(elf.ok()) << elf.status().ToString();
  auto code = DecodeFunction(**elf, *dis_, start);
  EXPECT_LT(code.size(), size_t{1} << 16);
  Status s = options.budget->status();
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(s.message().find("decoding functions"), std::string::npos) << s.message();
  // Spent stays spent: later searches return at once.
  EXPECT_TRUE(FindMethodTables(**elf).empty());

  auto timed = Budget::WithTimeout(std::chrono::milliseconds(0));
  EXPECT_FALSE(timed->Charge(1, "reading"));
  EXPECT_NE(timed->status().message().find("the 0 ms attach deadline"), std::string::npos)
      << timed->status().message();
}

TEST_F(HostileElfTest, ReadBudgetRefusesOversizedTablesWithoutReadingThem) {
  std::string bytes = ElfBuilder().Build();
  ElfOptions small;
  small.limits.max_read_bytes = 4096;
  auto elf = ElfFile::FromBytes(bytes, "big", small);
  EXPECT_EQ(elf.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(elf.status().message().find("more than the 4096 bytes threadscope reads"),
            std::string::npos)
      << elf.status().message();
  ElfOptions few;
  few.limits.max_symbols = 2;
  ElfBuilder b;
  for (int i = 0; i < 3; ++i) b.Symbol("s" + std::to_string(i), 0x410000 + i, 1, true);
  EXPECT_EQ(ElfFile::FromBytes(b.Build(), "x", few).status().code(),
            StatusCode::kResourceExhausted);
}

TEST_F(HostileElfTest, EveryTruncationOfAValidFileIsHandled) {
  std::string bytes = MakeFakePython().bytes;
  for (size_t n = 0; n < bytes.size(); n += n < 256 ? 1 : 509) {
    auto elf = ElfFile::FromBytes(std::string_view(bytes).substr(0, n), "cut");
    if (elf.ok()) {
      FindMethodTables(**elf);
      FindImportCallSitesBounded(**elf, *dis_, "sem_wait");
      (void)DetectPythonVersion(**elf, *dis_, "x");
    }
  }
}

// ---- files (review H3) ----

class HostileFileTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = TempDir(); }
  std::string dir_;
};

TEST_F(HostileFileTest, FifoIsRefusedWithoutBlocking) {
  std::string fifo = dir_ + "/python3.11";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  auto f = OpenRegularFile(fifo, fifo);
  EXPECT_EQ(f.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(f.status().message().find("it is a FIFO"), std::string::npos) << f.status().message();
  EXPECT_EQ(ElfFile::Open(fifo).status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(HostileFileTest, DevicesTtysAndDirectoriesAreRefused) {
  auto dir = OpenRegularFile(dir_, dir_);
  EXPECT_NE(dir.status().message().find("it is a directory"), std::string::npos);
  auto zero = OpenRegularFile("/dev/zero", "/dev/zero");
  EXPECT_NE(zero.status().message().find("a character device"), std::string::npos);
  // A pty slave: opened without O_NOCTTY by a session leader it would become the daemon's
  // controlling terminal. O_PATH opens nothing, and it is refused before any real open.
  int master = posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0) GTEST_SKIP() << "no pseudo-terminals here: " << std::strerror(errno);
  ASSERT_EQ(grantpt(master), 0);
  ASSERT_EQ(unlockpt(master), 0);
  std::string slave = ptsname(master);
  auto tty = OpenRegularFile(slave, slave);
  EXPECT_EQ(tty.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(tty.status().message().find("a character device"), std::string::npos);
  close(master);
}

TEST_F(HostileFileTest, SparseGiantIsRefusedWithoutReading) {
  std::string path = dir_ + "/python-16g";
  WriteFile(path, ElfBuilder().Build());
  ASSERT_EQ(truncate(path.c_str(), int64_t{16} << 30), 0);
  auto f = OpenRegularFile(path, path);
  EXPECT_EQ(f.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(f.status().message().find("it is 16.0 GiB, more than the 4.0 GiB"), std::string::npos)
      << f.status().message();
  // Under the file limit but with a 1 GiB loadable segment: refused by the read budget, from
  // the headers alone.
  std::string bytes = ElfBuilder().Build();
  AddLoad(&bytes, 0x10000000, 0x100000, uint64_t{1} << 30);
  std::string big = dir_ + "/python-1g";
  WriteFile(big, bytes);
  ASSERT_EQ(truncate(big.c_str(), (int64_t{1} << 30) + 0x100000), 0);
  auto elf = ElfFile::Open(big);
  EXPECT_EQ(elf.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(elf.status().message().find("more than the 256 MiB"), std::string::npos)
      << elf.status().message();
  // A sparse file whose useful parts are small is read only where they are.
  std::string padded = dir_ + "/python-padded";
  WriteFile(padded, ElfBuilder().Build());
  ASSERT_EQ(truncate(padded.c_str(), int64_t{3} << 30), 0);
  auto ok = ElfFile::Open(padded);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_LT((*ok)->bytes_read(), 1u << 20);
}

TEST_F(HostileFileTest, ProcessExeIsTheInodeThatRuns) {
  // A fake /proc whose pid 4242 "exe" points at a FIFO (what a replaced binary's stripped path
  // could name): refused, and nothing blocks.
  std::string proc_root = dir_ + "/proc";
  ASSERT_EQ(mkdir(proc_root.c_str(), 0755), 0);
  ASSERT_EQ(mkdir((proc_root + "/4242").c_str(), 0755), 0);
  std::string fifo = dir_ + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  ASSERT_EQ(symlink(fifo.c_str(), (proc_root + "/4242/exe").c_str()), 0);
  ProcFs fake(proc_root);
  auto f = OpenProcessExe(fake, 4242);
  EXPECT_EQ(f.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(f.status().message().find("the executable of pid 4242"), std::string::npos);
  EXPECT_EQ(OpenProcessExe(fake, 4243).status().code(), StatusCode::kNotFound);
  // This process's own executable, through the real /proc.
  ProcFs proc;
  auto self = OpenProcessExe(proc, getpid());
  ASSERT_TRUE(self.ok()) << self.status().ToString();
  struct stat st;
  ASSERT_EQ(stat("/proc/self/exe", &st), 0);
  EXPECT_EQ((*self)->stat().st_ino, st.st_ino);
  // The handle's path resolves to the same file (what uprobes attach through).
  struct stat via;
  ASSERT_EQ(stat((*self)->ProcPath().c_str(), &via), 0);
  EXPECT_EQ(via.st_ino, st.st_ino);
}

TEST_F(HostileFileTest, SymlinksCannotEscapeTheTargetsRoot) {
  std::string root = dir_ + "/root";
  for (const char* d : {"/root", "/root/usr", "/root/usr/lib", "/outside"}) {
    ASSERT_EQ(mkdir((dir_ + d).c_str(), 0755), 0);
  }
  WriteFile(root + "/usr/lib/libpython3.11.so", "inside");
  WriteFile(dir_ + "/outside/secret", "outside");
  ASSERT_EQ(symlink("/usr/lib/libpython3.11.so", (root + "/abs-inside").c_str()), 0);
  ASSERT_EQ(symlink((dir_ + "/outside/secret").c_str(), (root + "/abs-outside").c_str()), 0);
  ASSERT_EQ(symlink("../../../../../../outside/secret", (root + "/usr/up").c_str()), 0);
  ASSERT_EQ(symlink("/proc/self/root/etc/passwd", (root + "/magic").c_str()), 0);
  int root_fd = open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(root_fd, 0);
  auto read_all = [](const FileRef& f) {
    std::string s(f->size(), '\0');
    EXPECT_TRUE(f->ReadAt(0, s.data(), s.size()).ok());
    return s;
  };
  // An absolute symlink resolves inside the root.
  auto inside = OpenRegularFileInRoot(root_fd, "/abs-inside", "x");
  ASSERT_TRUE(inside.ok()) << inside.status().ToString();
  EXPECT_EQ(read_all(*inside), "inside");
  // Neither an absolute symlink to the host path, nor "..", nor a magic link gets out.
  for (const char* escape : {"/abs-outside", "/usr/up", "/../../outside/secret", "/magic"}) {
    auto f = OpenRegularFileInRoot(root_fd, escape, escape);
    if (f.ok()) {
      EXPECT_NE(read_all(*f), "outside") << escape;
    }
    EXPECT_FALSE(f.ok()) << escape;
  }
  close(root_fd);
}

// Mappings are verified by device and inode when the kernel does not let us open them
// directly; replaced or deleted files are refused with the reason.
TEST_F(HostileFileTest, MappedFilesAreTheOnesMapped) {
  std::string path = dir_ + "/libpython3.11.so.1.0";
  WriteFile(path, std::string(8192, 'a'));
  int fd = open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  void* map = mmap(nullptr, 8192, PROT_READ, MAP_PRIVATE, fd, 0);
  ASSERT_NE(map, MAP_FAILED);
  close(fd);
  ProcFs proc;
  auto find = [&]() -> std::optional<Mapping> {
    auto maps = proc.Maps(getpid());
    for (const auto& m : *maps) {
      if (m.start == reinterpret_cast<uint64_t>(map)) return m;
    }
    return std::nullopt;
  };
  auto m = find();
  ASSERT_TRUE(m);
  MappedFileOptions by_path;
  by_path.use_map_files = false;
  auto same = OpenMappedFile(proc, getpid(), *m, by_path);
  ASSERT_TRUE(same.ok()) << same.status().ToString();
  // Replace the file at that path.
  std::string other = dir_ + "/other";
  WriteFile(other, std::string(8192, 'b'));
  ASSERT_EQ(rename(other.c_str(), path.c_str()), 0);
  auto replaced = OpenMappedFile(proc, getpid(), *m, by_path);
  EXPECT_EQ(replaced.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(replaced.status().message().find("is not the one the process mapped"),
            std::string::npos)
      << replaced.status().message();
  EXPECT_NE(replaced.status().message().find("CAP_CHECKPOINT_RESTORE"), std::string::npos);
  // Through map_files (when this test may open them: CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN
  // in the initial user namespace) the mapped file itself is read.
  char link[64];
  std::snprintf(link, sizeof(link), "/proc/self/map_files/%llx-%llx",
                static_cast<unsigned long long>(m->start), static_cast<unsigned long long>(m->end));
  int probe = open(link, O_PATH | O_CLOEXEC);
  if (probe >= 0) {
    close(probe);
    auto direct = OpenMappedFile(proc, getpid(), *m);
    ASSERT_TRUE(direct.ok()) << direct.status().ToString();
    char c = 0;
    ASSERT_TRUE((*direct)->ReadAt(0, &c, 1).ok());
    EXPECT_EQ(c, 'a');
  }
  // Deleted: maps says so.
  ASSERT_EQ(unlink(path.c_str()), 0);
  m = find();
  ASSERT_TRUE(m);
  auto deleted = OpenMappedFile(proc, getpid(), *m, by_path);
  EXPECT_EQ(deleted.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(deleted.status().message().find("deleted"), std::string::npos)
      << deleted.status().message();
  munmap(map, 8192);
}

// ---- code objects (review M2): the cache is bounded in bytes ----

class BigTableMemory : public MemoryReader {
 public:
  // Code objects at kCode + i * 0x1000 (i < 4096) sharing one 1 MiB line table.
  static constexpr uint64_t kCode = 0x10000000, kTable = 0x20000000, kStr = 0x30000000;
  static constexpr uint64_t kCodeType = 0x1000, kUnicodeType = 0x2000, kBytesType = 0x3000;
  explicit BigTableMemory(const PyLayout& l) : l_(l), table_(1 << 20, '\x80') {}
  bool Read(uint64_t addr, void* out, size_t n) const override {
    std::memset(out, 0, n);
    auto put = [&](uint64_t field_addr, uint64_t v, size_t size) {
      if (addr <= field_addr && field_addr + size <= addr + n) {
        std::memcpy(static_cast<char*>(out) + (field_addr - addr), &v, size);
      }
    };
    if (addr >= kCode && addr < kCode + 4096 * 0x1000) {
      uint64_t code = addr - (addr - kCode) % 0x1000;
      put(code + 8, kCodeType, 8);
      put(code + 16, 100, 8);
      put(code + l_.code_filename, kStr, 8);
      put(code + static_cast<uint32_t>(l_.code_qualname), kStr, 8);
      put(code + l_.code_firstlineno, 1, 4);
      put(code + l_.code_linetable, kTable, 8);
      return true;
    }
    if (addr >= kTable && addr < kTable + 32) {
      put(kTable + 8, kBytesType, 8);
      put(kTable + 16, table_.size(), 8);
      return true;
    }
    if (addr >= kTable + 32 && addr + n <= kTable + 32 + table_.size()) {
      std::memcpy(out, table_.data() + (addr - kTable - 32), n);
      return true;
    }
    if (addr >= kStr && addr < kStr + 256) {
      put(kStr + 8, kUnicodeType, 8);
      put(kStr + 16, 1, 8);
      put(kStr + 32, (1u << 2) | (1u << 5) | (1u << 6), 4);
      put(kStr + l_.ascii_data, 'f', 1);
      return true;
    }
    return false;
  }

 private:
  PyLayout l_;
  std::string table_;
};

TEST(HostileCodeTest, CodeCacheIsBoundedInBytes) {
  PyStackSupport support;
  support.layout = *BuiltinPyLayout(PythonVersion{3, 12});
  support.code_type = BigTableMemory::kCodeType;
  support.unicode_type = BigTableMemory::kUnicodeType;
  support.bytes_type = BigTableMemory::kBytesType;
  BigTableMemory memory(support.layout);
  PyCodeResolver resolver(memory, support);
  for (uint64_t i = 0; i < 200; ++i) {
    uint64_t code = BigTableMemory::kCode + i * 0x1000;
    auto f = resolver.Resolve(code, code + support.layout.code_adaptive + 4);
    ASSERT_EQ(f.kind, ResolvedFrame::Kind::kPython) << i;
    EXPECT_LE(resolver.cache_bytes(), uint64_t{65} << 20);
  }
}

TEST(HostileCodeTest, LineArithmeticDoesNotOverflow) {
  // firstlineno at INT_MAX and tables that keep adding: unknown, not undefined behaviour.
  std::string up(1 << 16, '\x7f');
  for (size_t i = 0; i < up.size(); i += 2) up[i] = 1;
  EXPECT_FALSE(LineForOffset(LineTableFormat::kLnotab36, up, INT32_MAX, 1 << 20));
  EXPECT_FALSE(LineForOffset(LineTableFormat::kLinetable310, up, INT32_MAX, 1 << 14));
  std::string big_varints;
  for (int i = 0; i < 1000; ++i) {
    big_varints += std::string("\xf0\x7e\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x3f", 10);
  }
  EXPECT_FALSE(LineForOffset(LineTableFormat::kLocations311, big_varints, INT32_MAX, 999));
  EXPECT_FALSE(LineForOffset(LineTableFormat::kLinetable310, "\x02\x01", 7, INT64_MAX));
}

}  // namespace
}  // namespace threadscope::target

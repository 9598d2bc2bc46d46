#include "tests/fuzz/seeds.h"

#include <google/protobuf/util/delimited_message_util.h>

#include <cstring>
#include <sstream>

#include "recording/recording.h"
#include "daemon/model/event_decoder.h"
#include "daemon/target/py_layout.h"
#include "probes/threadscope_events.h"
#include "tests/fuzz/py_code_input.h"
#include "tests/unit/elf_builder.h"
#include "tests/unit/event_generator.h"

namespace threadscope::fuzz {

namespace {

using testing::Batch;
using testing::EventGenerator;

std::vector<std::string> ElfSeeds() {
  std::vector<std::string> out;
  for (int variant = 0; variant < 4; ++variant) {
    testing::FakePythonOptions o;
    o.pie = variant & 1;
    o.py_version_symbol = variant & 2;
    o.full_symbols = variant == 3;
    if (variant == 1) o.build_id = "\x12\x34\x56\x78";
    out.push_back(testing::MakeFakePython(o).bytes);
  }
  return out;
}

// A record with a Python stack trailer.
std::string WithStack(std::string record, uint64_t code, uint64_t instr) {
  ts_header h;
  std::memcpy(&h, record.data(), sizeof(h));
  ts_py_stack stack{};
  stack.tstate = 0x7000;
  stack.depth = 2;
  stack.frames[0] = {code, instr};
  stack.frames[1] = {code + 0x100, instr + 4};
  h.flags |= TS_HDR_PY_STACK;
  h.size += sizeof(stack);
  std::memcpy(record.data(), &h, sizeof(h));
  record.append(reinterpret_cast<const char*>(&stack), sizeof(stack));
  return record;
}

// Thread lifecycles, a contended lock with stacks and locations, the GIL, losses and marks.
std::vector<std::string> RecordBatches(EventGenerator& g) {
  ts_py_location loc{};
  loc.code = 0x5000;
  loc.instr = 0x40;
  loc.line = 12;
  return {
      Batch({g.Mark(TS_MARK_ATTACHED), g.Preexisting(1000, 5, "python3"), g.StartBegin(1000, 0xb0),
             g.Clone(1000, 1001, "python3"), g.StartEnd(1000, 0xb0, true, 0x7f01),
             g.Bootstrap(1001, 0xb0, 0x7f01), g.Sentinel(1001, 0x10, 0x20),
             g.Rename(1001, 1001, "worker")}),
      Batch({model::MakePyLocationRecord(1000, g.now(), loc, "/srv/app.py", "Cache.get"),
             g.LockNew(1000, 0x900, 0x910), WithStack(g.LockNew(1001, 0x920, 0x930), 0x5000, 0x40),
             WithStack(g.SemWait(TS_EV_SEM_WAIT_BEGIN, 1001, 0x910), 0x5000, 0x40),
             g.FutexWake(1000, 0x910), g.SemWait(TS_EV_SEM_WAIT_END, 1001, 0x910, 0),
             g.LockAcquire(1001, 0x900, 0x910, 1, true), g.LockRelease(1001, 0x900, 0x910),
             g.Gil(1000, TS_GIL_TAKE_BEGIN), g.Gil(1000, TS_GIL_TAKE_END),
             g.Gil(1000, TS_GIL_FORCED), g.Gil(1000, TS_GIL_DROP),
             g.Gil(1001, TS_GIL_DROP_FORCED)}),
      Batch({g.JoinBegin(1000, 0x7f01), g.BodyDone(1001), g.Exit(1001, "worker"), g.JoinEnd(1000),
             g.Detach(1000, 0x7f01), g.SemWait(TS_EV_SEM_DESTROY, 1000, 0x20), g.Lost(3),
             g.Lost(1, TS_LOST_STASH), g.Exit(1000), g.Mark(TS_MARK_TARGET_EXITED)}),
  };
}

std::vector<std::string> RecordSeeds() {
  EventGenerator g;
  std::vector<std::string> out;
  std::string all;
  for (const auto& b : RecordBatches(g)) all += b;
  for (char config : {'\0', '\x06', '\x0e'}) out.push_back(config + all);
  return out;
}

std::vector<std::string> RecordingSeeds() {
  EventGenerator g;
  std::ostringstream file;
  file << recording::kRecordingMagic;
  v1::RecordingChunk header;
  auto* h = header.mutable_header();
  h->set_format_version(recording::kRecordingFormatVersion);
  h->set_abi_version(TS_ABI_VERSION);
  v1::Target* t = h->mutable_target();
  t->set_pid(1000);
  t->set_python_version("3.12.1");
  t->set_join_visibility(v1::JOIN_VISIBILITY_BLOCKING_ONLY);
  t->set_body_done_visible(true);
  t->set_lock_mode("contended");
  google::protobuf::util::SerializeDelimitedToOstream(header, &file);
  for (const auto& b : RecordBatches(g)) {
    v1::RecordingChunk c;
    c.set_records(b);
    google::protobuf::util::SerializeDelimitedToOstream(c, &file);
  }
  v1::RecordingChunk trailer;
  trailer.mutable_trailer()->set_state(v1::TARGET_STATE_EXITED);
  trailer.mutable_trailer()->set_records(40);
  google::protobuf::util::SerializeDelimitedToOstream(trailer, &file);
  return {file.str()};
}

// A memory image holding one code object (with its file and name strings and line table) for
// the layout of 3.<minor>, and the pairs that resolve into it.
std::string PyCodeSeed(int minor) {
  auto layout = target::BuiltinPyLayout(target::PythonVersion{3, minor});
  const target::PyLayout& l = *layout;
  std::string image(0x2000, '\0');
  auto put = [&](uint64_t addr, const void* v, size_t n) {
    std::memcpy(image.data() + (addr - kImageBase), v, n);
  };
  auto u64 = [&](uint64_t addr, uint64_t v) { put(addr, &v, 8); };
  auto u32 = [&](uint64_t addr, uint32_t v) { put(addr, &v, 4); };
  const uint64_t code = kImageBase + 0x100, file = kImageBase + 0x800, name = kImageBase + 0x900,
                 table = kImageBase + 0xa00, bytecode = kImageBase + 0xb00;
  auto str = [&](uint64_t at, const std::string& s) {
    u64(at + 8, kUnicodeType);
    u64(at + 16, s.size());
    u32(at + 32, (1u << 2) | (1u << 5) | (1u << 6));  // kind 1, compact, ascii
    put(at + l.ascii_data, s.data(), s.size());
  };
  str(file, "/srv/app.py");
  str(name, "handler");
  std::string lt = minor >= 11 ? std::string("\xd3\x00\x00\xe3\x00\x00", 6)
                               : std::string("\x04\x01\x04\x02", 4);
  u64(table + 8, kBytesType);
  u64(table + 16, lt.size());
  put(table + 32, lt.data(), lt.size());
  u64(bytecode + 8, kBytesType);
  u64(bytecode + 16, 16);
  u64(code + 8, kCodeType);
  u64(code + 16, 8);  // Py_SIZE: code units (3.11+)
  u64(code + l.code_filename, file);
  u64(code + (l.code_qualname >= 0 ? static_cast<uint32_t>(l.code_qualname) : l.code_name), name);
  u32(code + l.code_firstlineno, 10);
  u64(code + l.code_linetable, table);
  if (l.code_code >= 0) u64(code + static_cast<uint32_t>(l.code_code), bytecode);
  uint64_t instr = l.instr_is_pointer ? code + static_cast<uint64_t>(l.code_adaptive) + 6 : 4;
  std::string out;
  out += static_cast<char>(minor);
  out += '\x02';
  out.append(reinterpret_cast<const char*>(&code), 8);
  out.append(reinterpret_cast<const char*>(&instr), 8);
  uint64_t none = kNone, zero = 0;
  out.append(reinterpret_cast<const char*>(&none), 8);
  out.append(reinterpret_cast<const char*>(&zero), 8);
  return out + image;
}

std::vector<std::string> PyCodeSeeds() {
  std::vector<std::string> out;
  for (int minor : {6, 9, 10, 11, 12, 13}) out.push_back(PyCodeSeed(minor));
  return out;
}

}  // namespace

std::vector<std::string> Targets() { return {"elf", "record", "recording", "py_code"}; }

std::vector<std::string> Seeds(const std::string& target) {
  if (target == "elf") return ElfSeeds();
  if (target == "record") return RecordSeeds();
  if (target == "recording") return RecordingSeeds();
  if (target == "py_code") return PyCodeSeeds();
  return {};
}

}  // namespace threadscope::fuzz

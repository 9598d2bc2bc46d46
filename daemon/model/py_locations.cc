#include "daemon/model/py_locations.h"

namespace threadscope::model {

namespace {

constexpr uint32_t kSkip = UINT32_MAX;

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool IsSynchronizationModule(const std::string& file) {
  return EndsWith(file, "/threading.py") || EndsWith(file, "/queue.py") || file == "threading.py" ||
         file == "queue.py";
}

}  // namespace

LocationTable::LocationTable() {
  CodeLocation unknown;
  unknown.file = "?";
  unknown.function = "?";
  unknown.unreadable = true;
  locations_.push_back(unknown);
}

void LocationTable::Define(const PyLocationRecord& r) {
  auto key = std::make_pair(r.fixed.code, r.fixed.instr);
  if (r.fixed.flags & TS_LOCATION_NOT_PYTHON) {
    ids_[key] = kSkip;
    return;
  }
  CodeLocation l;
  l.file = ToValidUtf8(r.file);
  l.function = ToValidUtf8(r.function);
  l.line = r.fixed.line;
  l.unreadable = (r.fixed.flags & TS_LOCATION_UNREADABLE) != 0;
  // One id per distinct place: pairs that mean the same line (the same code at two
  // instructions of one line; free-threaded builds' per-thread copies of the bytecode) share
  // it, so "where" is the same place for everyone who waits there.
  auto place = std::make_tuple(l.file, l.function, l.line, l.unreadable);
  auto known = by_place_.find(place);
  if (known != by_place_.end()) {
    ids_[key] = known->second;
    return;
  }
  locations_.push_back(std::move(l));
  // A redefinition (the code object was freed and its address reused) gets the id of what it
  // means now: stacks resolved before keep what they meant.
  ids_[key] = static_cast<uint32_t>(locations_.size() - 1);
  by_place_.emplace(std::move(place), ids_[key]);
}

PyStack LocationTable::Resolve(const ts_py_stack& stack) const {
  PyStack out;
  out.truncated = (stack.flags & TS_STACK_TRUNCATED) != 0;
  for (int i = 0; i < stack.depth && i < TS_PY_MAX_FRAMES; ++i) {
    auto it = ids_.find({stack.frames[i].code, stack.frames[i].instr});
    if (it == ids_.end()) {
      out.frames.push_back(0);
    } else if (it->second != kSkip) {
      out.frames.push_back(it->second);
    }
  }
  return out;
}

const CodeLocation& LocationTable::Get(uint32_t id) const {
  return id < locations_.size() ? locations_[id] : locations_[0];
}

size_t LocationTable::PrimaryFrame(const PyStack& stack) const {
  for (size_t i = 0; i < stack.frames.size(); ++i) {
    if (!IsSynchronizationModule(Get(stack.frames[i]).file)) return i;
  }
  return 0;
}

}  // namespace threadscope::model

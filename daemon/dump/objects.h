// Reading Python objects out of another process's memory without running any of its code:
// type names, str/bytes/int/float, tuples, dicts, instance attributes, bound methods, weakrefs,
// lock objects. Every read is bounded (string lengths, entry counts, chain depths) and checked
// (an object's type is verified before its fields are trusted): the memory is the target's, and
// a hung or corrupted process can hold anything.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "daemon/dump/facts.h"
#include "daemon/dump/layout.h"
#include "daemon/dump/memory.h"

namespace threadscope::dump {

class ObjectReader {
 public:
  static constexpr size_t kMaxString = 1024;
  static constexpr size_t kMaxTuple = 4096;
  static constexpr size_t kMaxDictEntries = 1 << 16;

  // `type_names`: a cache of tp_name by type object that may outlive this reader.
  ObjectReader(const MemoryReader& memory, const ResolvedLayout& layout,
               std::unordered_map<uint64_t, std::string>* type_names = nullptr)
      : m_(memory), l_(layout.layout), a_(layout.addr),
        type_names_(type_names ? type_names : &own_type_names_) {}

  const DumpLayout& layout() const { return l_; }
  const RuntimeAddresses& addresses() const { return a_; }
  const MemoryReader& memory() const { return m_; }

  uint64_t TypeOf(uint64_t obj) const;
  // tp_name of a type object ("_thread.lock", "Condition"); "" when unreadable.
  std::string TypeName(uint64_t type) const;
  std::string TypeNameOf(uint64_t obj) const { return obj ? TypeName(TypeOf(obj)) : ""; }
  // The names of a type and its bases (tp_base chain), at most 8.
  std::vector<std::string> TypeChain(uint64_t type) const;

  // A str (unicode; 2.7: str) as UTF-8: lone surrogates and garbage become U+FFFD.
  std::optional<std::string> Str(uint64_t obj, size_t max_chars = kMaxString) const;
  std::optional<std::string> Bytes(uint64_t obj, size_t max = 1 << 20) const;
  std::optional<int64_t> Int(uint64_t obj) const;
  std::optional<double> Float(uint64_t obj) const;
  std::optional<std::vector<uint64_t>> Tuple(uint64_t obj, size_t max = kMaxTuple) const;

  // d[name] for a dict whose keys are str.
  std::optional<uint64_t> DictGet(uint64_t dict, std::string_view name) const;
  // getattr(obj, name) for instance attributes (no descriptors, no __getattr__ run).
  std::optional<uint64_t> GetAttr(uint64_t obj, std::string_view name) const;

  // The object a bound method is bound to: PyCFunction's m_self, PyMethod's im_self.
  // `name` gets the method's name when known (PyCFunction: ml_name).
  std::optional<uint64_t> BoundSelf(uint64_t obj, std::string* name = nullptr) const;
  std::optional<uint64_t> WeakrefTarget(uint64_t obj) const;
  bool IsMethodDescriptor(uint64_t obj, std::string* name = nullptr) const;

  // A _thread.lock / _thread.RLock (or 2.7's Python _RLock), read; nullopt for anything else.
  std::optional<LockInfo> Lock(uint64_t obj) const;
  // Whether obj is a lock object (cheap: by type name).
  bool IsLock(uint64_t obj) const;
  // The sem_t * of a semaphore-based lock (<= 3.13), 0 otherwise.
  uint64_t LockSemaphore(uint64_t obj) const;
  // A short description of a value for --locals: (type, value shown or "").
  std::pair<std::string, std::string> Describe(uint64_t obj) const;

 private:
  std::optional<uint64_t> DictGet27(uint64_t dict, std::string_view name) const;
  std::optional<uint64_t> DictGet36(uint64_t dict, std::string_view name) const;
  std::optional<uint64_t> DictGet311(uint64_t dict, std::string_view name) const;
  // Index of `name` among a shared-keys object's entries (split dicts, 3.11+).
  std::optional<size_t> SharedKeyIndex(uint64_t keys, std::string_view name) const;
  bool KeyEquals(uint64_t key, std::string_view name) const;
  std::optional<std::string> CString(uint64_t addr, size_t max) const;

  const MemoryReader& m_;
  const DumpLayout& l_;
  const RuntimeAddresses& a_;
  std::unordered_map<uint64_t, std::string> own_type_names_;
  std::unordered_map<uint64_t, std::string>* type_names_;
};

}  // namespace threadscope::dump

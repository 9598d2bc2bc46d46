// What the facts read from a hung process mean: each thread's state, what it waits for (the lock,
// the Condition/Event/Semaphore/Queue, the thread it joins, the GIL), who holds that and how it
// is known, and the wait-for cycles. Pure: no I/O, no clock; tested from synthetic facts.
//
// Rules (docs/DESIGN.md "dump"):
// - What a thread waits for comes from the kernel (the futex it sleeps on, resolved to a lock
//   object by the reader) and its innermost Python frames (threading.py's Condition.wait under
//   Event.wait is an Event wait). A stack alone never makes a thread "blocked".
// - An owner is named only from evidence, with its source: the RLock's owner field, a frame
//   inside `with` on that lock, an unreleased explicit acquire() in a frame, the daemon's own
//   trace; otherwise it is unknown. A Condition.wait releases its lock: a frame inside
//   `with cond:` that waits on `cond` does not hold it.
// - A deadlock is a cycle of proven edges only (IsProven): exact fields and pending `with`
//   exits, never an inferred acquire().
#pragma once

#include "daemon/dump/facts.h"

namespace threadscope::dump {

DumpReport Analyze(const ProcessFacts& facts);

// The innermost frame outside threading.py and queue.py: where the user's code waits.
std::optional<size_t> UserFrame(const std::vector<Frame>& stack);

}  // namespace threadscope::dump

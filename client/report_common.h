// What the JSON report (report_json.h) and the text views (text_view.h) say the same way: the
// names of the API's enums, thread counts, where a stack is. Pure functions of API messages.
#pragma once

#include <string>

#include "threadscope/v1/threadscope.pb.h"

namespace threadscope::client {

const char* SymbolsName(v1::SymbolLevel s);
const char* JoinVisibilityName(v1::JoinVisibility v);
const char* OriginName(v1::ThreadOrigin o);
const char* ChangeName(v1::ThreadChange c);
const char* LostSourceName(v1::LostEvents::Source s);
const char* LockKindName(v1::LockKind k);
const char* WaitKindName(v1::WaitKind k);
const char* LockChangeName(v1::LockChange c);
const char* GilChangeName(v1::GilChange c);
const char* GilRuntimeName(v1::GilRuntime r);
// Free-threaded builds: what the GIL did at run time, e.g. "enabled at run time at +1.204s, by
// an import of a module not marked free-threading safe". Empty on GIL builds.
std::string GilRuntimeText(const v1::Snapshot& s);
const char* StateName(v1::ThreadState state);

// Threads by origin, state and outcome; finished threads the engine no longer lists count too.
struct Counts {
  int seen = 0, started = 0, failed = 0, preexisting = 0, native = 0;
  int running = 0, starting = 0, done = 0;
  int joined_yes = 0, joined_no = 0, joined_unknown = 0;
  int returned_yes = 0, returned_no = 0;
};

Counts Count(const v1::Snapshot& s);

// The last two components of a path: enough to recognize a file in a terminal line.
std::string ShortFile(const std::string& file);
// "app/cache.py:42 Cache.get": the stack's primary frame (the innermost outside threading.py).
std::string Where(const v1::PyStack& st, bool short_file = false);

}  // namespace threadscope::client

// Text that came from a traced process (thread names, file and function names, paths) on its
// way to a terminal or a log line: every control character (C0, DEL, C1) and every byte that is
// not valid UTF-8 is shown as an escape, so a target cannot move the cursor, clear the screen,
// set a window title or forge log lines. JSON output needs none of this (its encoder escapes).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace threadscope {

// "a\x1b[2Jb" -> "a\x1b[2Jb" spelled with a backslash: "a\\x1b[2Jb"; valid UTF-8 passes.
std::string Printable(std::string_view s);

// Bytes as valid UTF-8 (protobuf strings must be): invalid sequences, overlong forms and
// surrogates become U+FFFD, one per byte. Applied to everything a target controls (names, paths,
// what dump reads) before it goes into a message, so live and replayed reports agree and no
// message fails to serialize. The one sanitizer: the model, target, engine and dump use it.
std::string ToValidUtf8(std::string_view bytes);

// Appends code point `cp` as UTF-8; lone surrogates and values past U+10FFFF become U+FFFD
// (Python strings may hold them; UTF-8 cannot).
void AppendUtf8(std::string* out, uint32_t cp);

}  // namespace threadscope

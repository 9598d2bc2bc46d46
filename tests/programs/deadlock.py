"""Two threads that deadlock on purpose (A then B, B then A, forced by a barrier). Writes the
ground truth to argv[1] once both are blocked, then waits to be killed."""
import json
import os
import sys
import threading
import time

A, B = threading.Lock(), threading.Lock()
gate = threading.Barrier(2)
tids = {}
lines = {}
def here():
    return sys._getframe(1).f_lineno
def one():
    tids["one"] = threading.get_native_id()
    lines["one_takes_a"] = here() + 1
    with A:
        gate.wait()
        lines["one_waits_b"] = here() + 1
        with B:
            pass
def two():
    tids["two"] = threading.get_native_id()
    lines["two_takes_b"] = here() + 1
    with B:
        gate.wait()
        lines["two_waits_a"] = here() + 1
        with A:
            pass
for f in (one, two):
    threading.Thread(target=f, daemon=True).start()
time.sleep(0.5)  # both are blocked by now
with open(sys.argv[1] + ".tmp", "w") as f:
    json.dump({"pid": os.getpid(), "a": id(A), "b": id(B), "one": tids["one"],
               "two": tids["two"], "file": sys._getframe().f_code.co_filename,
               "lines": lines}, f)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)

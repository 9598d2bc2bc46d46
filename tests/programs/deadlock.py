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
def one():
    tids["one"] = threading.get_native_id()
    with A:
        gate.wait()
        with B:
            pass
def two():
    tids["two"] = threading.get_native_id()
    with B:
        gate.wait()
        with A:
            pass
for f in (one, two):
    threading.Thread(target=f, daemon=True).start()
time.sleep(0.5)  # both are blocked by now
with open(sys.argv[1] + ".tmp", "w") as f:
    json.dump({"pid": os.getpid(), "a": id(A), "b": id(B), "one": tids["one"],
               "two": tids["two"]}, f)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)

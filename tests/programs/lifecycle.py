"""Thread lifecycle ground truth, for Python 2.7 and 3.x.

Starts threads of every kind threadscope must tell apart, and writes what it did as JSON to
argv[1] just before it exits:
  joined_running  joined while still running (the join has to wait)
  joined_done     joined after it had finished (the join does not wait)
  never_joined    finished, never joined
  left_running    daemon threads still blocked when the interpreter exits
  raw             started with _thread.start_new_thread (cannot be joined)
  failed          start() raised: RLIMIT_AS plus a 1 GiB stack size make pthread_create fail
Counts can be changed with argv[2:] as kind=count.
"""
from __future__ import print_function

import json
import os
import resource
import sys
import threading
import time

try:
    import _thread as raw_thread
except ImportError:  # Python 2
    import thread as raw_thread

COUNTS = {"joined_running": 3, "joined_done": 2, "never_joined": 2, "left_running": 2,
          "raw": 2, "failed": 2}
for arg in sys.argv[2:]:
    key, value = arg.split("=")
    COUNTS[key] = int(value)

truth = {"pid": os.getpid(), "python": sys.version.split()[0], "threads": []}
lock = threading.Lock()


def note(kind, ident, native_id=None):
    truth["threads"].append({"kind": kind, "ident": ident, "native_id": native_id})


def native_id_of(t):
    return getattr(t, "native_id", None)  # 3.8+


def vm_size_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


# joined_running: staggered sleeps, so each join() waits for its thread.
workers = [threading.Thread(target=time.sleep, args=(0.25 * (i + 1),))
           for i in range(COUNTS["joined_running"])]
for t in workers:
    t.start()
for t in workers:
    t.join()
    note("joined_running", t.ident, native_id_of(t))

# joined_done: wait (without is_alive(), which would consume the join sentinel) until the
# thread's function is over, give it time to exit, then join.
finished = []
def quick(n):
    with lock:
        finished.append(n)
workers = [threading.Thread(target=quick, args=(i,)) for i in range(COUNTS["joined_done"])]
for t in workers:
    t.start()
while len(finished) < len(workers):
    time.sleep(0.01)
time.sleep(0.2)
for t in workers:
    t.join()
    note("joined_done", t.ident, native_id_of(t))

# never_joined: same, minus the join.
finished = []
workers = [threading.Thread(target=quick, args=(i,)) for i in range(COUNTS["never_joined"])]
for t in workers:
    t.start()
    note("never_joined", t.ident, native_id_of(t))
while len(finished) < len(workers):
    time.sleep(0.01)

# raw: _thread.start_new_thread returns the ident.
done = []
def raw_body():
    with lock:
        done.append(1)
for _ in range(COUNTS["raw"]):
    note("raw", raw_thread.start_new_thread(raw_body, ()))
while len(done) < COUNTS["raw"]:
    time.sleep(0.01)
time.sleep(0.2)

# failed: no room for a 1 GiB stack under RLIMIT_AS.
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
resource.setrlimit(resource.RLIMIT_AS, (vm_size_bytes() + (256 << 20), hard))
threading.stack_size(1 << 30)
for _ in range(COUNTS["failed"]):
    t = threading.Thread(target=time.sleep, args=(0,))
    try:
        t.start()
        raise SystemExit("start() was expected to fail under RLIMIT_AS")
    except (RuntimeError, raw_thread.error):
        note("failed", None)
threading.stack_size(0)
resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

# left_running: daemon threads blocked forever; the interpreter exits under them.
forever = threading.Event()
for _ in range(COUNTS["left_running"]):
    t = threading.Thread(target=forever.wait)
    t.daemon = True
    t.start()
    note("left_running", t.ident, native_id_of(t))
time.sleep(0.1)

with open(sys.argv[1], "w") as f:
    json.dump(truth, f)

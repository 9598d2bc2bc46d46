"""GIL hand-offs, hard: two threads call os.stat (which drops and re-takes the GIL) as fast as
they can for SECONDS (argv[2], default 10), so the GIL changes hands tens of thousands of times a
second and takes often find it held. Writes to argv[1] each thread's native tid, its calls and
its running time: a thread takes the GIL at most once per call plus once per switch interval,
and can wait for it no longer than it ran."""
import json
import os
import sys
import threading
import time

seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
out = {"pid": os.getpid(), "switch_interval": sys.getswitchinterval(), "threads": []}
lock = threading.Lock()


def work():
    began = time.monotonic()
    end = began + seconds
    calls = 0
    while time.monotonic() < end:
        for _ in range(100):
            os.stat(".")
        calls += 100
    with lock:
        out["threads"].append({"tid": threading.get_native_id(), "calls": calls,
                               "ran_s": time.monotonic() - began})


threads = [threading.Thread(target=work) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
with open(sys.argv[1], "w") as f:
    json.dump(out, f)

"""A job auto-attach picks up by its name (fleet_test.py): THREADS threads take turns on one
lock for ROUNDS rounds each (every round holds it 2 ms, so the others wait), then it lives on
for SECONDS. Writes its ground truth to OUT (JSON) when its threads are done, and waits for
GO (a file) before starting them, when given, so the test can see it attached first.

usage: fleet_job.py SECONDS OUT [GO]"""
import json
import os
import sys
import threading
import time

THREADS, ROUNDS = 3, 20
seconds, out = float(sys.argv[1]), sys.argv[2]
go = sys.argv[3] if len(sys.argv) > 3 else None
deadline = time.time() + 30
while go and not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.01)
lock = threading.Lock()


def work():
    for _ in range(ROUNDS):
        with lock:
            time.sleep(0.002)


threads = [threading.Thread(target=work) for _ in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
with open(out + ".tmp", "w") as f:
    json.dump({"pid": os.getpid(), "threads_started": THREADS}, f)
os.rename(out + ".tmp", out)
time.sleep(seconds)

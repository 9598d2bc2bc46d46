"""A process to attach to (Python 2.7 and 3.x). Protocol, through files in argv[1]:
  writes ready.json  {pid, early: [{ident, native_id}]} once two early threads are blocked
  waits for go       then starts two late threads, joins them while they run, releases
                     the early threads and joins them
  writes truth.json  {late: [...], early: [...]}
  waits for exit     then exits 0
"""
from __future__ import print_function

import json
import os
import sys
import threading
import time

d = sys.argv[1]


def info(t):
    return {"ident": t.ident, "native_id": getattr(t, "native_id", None)}


def write(name, obj):
    tmp = os.path.join(d, name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.rename(tmp, os.path.join(d, name))


def wait_file(name):
    while not os.path.exists(os.path.join(d, name)):
        time.sleep(0.01)


release = threading.Event()
early = [threading.Thread(target=release.wait) for _ in range(2)]
for t in early:
    t.start()
write("ready.json", {"pid": os.getpid(), "early": [info(t) for t in early]})

wait_file("go")
late = [threading.Thread(target=time.sleep, args=(0.25 * (i + 1),)) for i in range(2)]
for t in late:
    t.start()
for t in late:
    t.join()
release.set()
for t in early:
    t.join()
write("truth.json", {"late": [info(t) for t in late], "early": [info(t) for t in early]})
wait_file("exit")

"""Free-threaded contention ground truth: threads that contend on one shared list and one shared
dict (each operation takes the object's own critical section), started together behind a
barrier. extend() and update() hold the object's mutex long enough that others must sleep for
it even on two CPUs. The JSON on argv[1] says which lines do what; argv[2] is the number of
rounds.

On a build with the GIL the same program runs (there is no contention on objects then: the GIL
serializes the threads), which is what the tests check there.
"""
import json
import os
import sys
import threading

truth = {"pid": os.getpid(), "file": sys._getframe().f_code.co_filename,
         "gil_enabled": getattr(sys, "_is_gil_enabled", lambda: True)()}
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 200000
threads = 4
shared_list = []
shared_dict = {}
barrier = threading.Barrier(threads)


def here():
    return sys._getframe(1).f_lineno


lines = {}


chunk = list(range(512))
chunk_dict = {i: i for i in range(512)}


def worker(k):
    barrier.wait()
    lines["list"] = here() + 2
    for i in range(rounds):
        shared_list.extend(chunk)
        shared_dict.update(chunk_dict)
        if len(shared_list) > 100000:
            shared_list.clear()
    lines["dict"] = lines["list"] + 1


ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
truth["lines"] = lines
truth["function"] = "worker"
truth["threads"] = threads
truth["rounds"] = rounds
with open(sys.argv[1], "w") as f:
    json.dump(truth, f)

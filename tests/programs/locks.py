"""Lock ground truth (CPython 3). Each scenario runs after the previous one is over and records
what happened; the JSON goes to argv[1] at the end.

  counts      worker i acquires its own lock (i+1)*50 times and a shared lock 10 times
  barrier     a holder takes `contended`, everybody meets at a barrier, the two waiters block
              on it while the holder sleeps 1 s holding it
  rlock       three levels of `with rlock`, then a waiter blocks while the holder is 2 deep
  condition   a consumer waits on a Condition until the producer notifies it
  timeout     acquire(timeout=0.1) on a lock held for 0.5 s fails once; 5 acquire(False) fail
  inversion   A then B in one thread, later B then A in another (no deadlock: one at a time)
  reuse       a contended lock is freed and a new one is allocated at the same address
"""
import json
import os
import sys
import threading
import time

truth = {"pid": os.getpid(), "file": sys._getframe().f_code.co_filename}


def here():
    """The caller's current line: where a stack captured there must point."""
    return sys._getframe(1).f_lineno


def native_id():
    """The thread's kernel tid (threading.get_native_id is 3.8+; gettid is syscall 186)."""
    if hasattr(threading, "get_native_id"):
        return threading.get_native_id()
    import ctypes
    return ctypes.CDLL(None, use_errno=True).syscall(186)


def run(*targets):
    ts = [threading.Thread(target=t) for t in targets]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return ts


# counts
shared = threading.Lock()
own = [threading.Lock() for _ in range(3)]
ids = {}
def counter(i):
    def body():
        ids[i] = native_id()
        for _ in range((i + 1) * 50):
            with own[i]:
                pass
        for _ in range(10):
            with shared:
                pass
    return body
run(*[counter(i) for i in range(3)])
truth["counts"] = {"own": [id(l) for l in own], "shared": id(shared),
                   "tids": [ids[i] for i in range(3)], "n": [(i + 1) * 50 for i in range(3)]}

# barrier
created_line = here() + 1
contended = threading.Lock()
barrier = threading.Barrier(3)
roles = {}
def holder():
    roles["holder"] = native_id()
    with contended:
        barrier.wait()
        time.sleep(1.0)  # long enough for the waiters to block even on a loaded machine
def waiter():
    roles.setdefault("waiters", []).append(native_id())
    barrier.wait()
    time.sleep(0.05)
    roles["wait_line"] = here() + 1
    with contended:
        pass
run(holder, waiter, waiter)
truth["barrier"] = {"lock": id(contended), "holder": roles["holder"], "waiters": roles["waiters"],
                    "created_line": created_line, "wait_line": roles["wait_line"]}

# rlock
rlock = threading.RLock()
state = {}
def rholder():
    state["holder"] = native_id()
    with rlock:
        with rlock:
            with rlock:
                pass
        state["deep"] = True
        time.sleep(0.3)  # 1 level held... then 2 below
def rholder2():
    state["holder2"] = native_id()
    with rlock:
        with rlock:
            state["held2"] = True
            time.sleep(1.0)  # long enough for the waiters to block even on a loaded machine
def rwaiter():
    state["waiter"] = native_id()
    while not state.get("held2"):
        time.sleep(0.005)
    with rlock:
        pass
run(rholder)
run(rholder2, rwaiter)
truth["rlock"] = {"lock": id(rlock), "holder": state["holder"], "holder2": state["holder2"],
                  "waiter": state["waiter"]}

# condition
cond = threading.Condition()
items = []
cstate = {}
def consumer():
    cstate["consumer"] = native_id()
    with cond:
        while not items:
            cond.wait()
def producer():
    cstate["producer"] = native_id()
    time.sleep(0.2)
    with cond:
        items.append(1)
        cond.notify()
run(consumer, producer)
truth["condition"] = {"consumer": cstate["consumer"], "producer": cstate["producer"]}

# timeout and failed non-blocking tries
slow = threading.Lock()
tstate = {"tries": 5}
def sitter():
    with slow:
        tstate["held"] = True
        time.sleep(0.5)
def impatient():
    while not tstate.get("held"):
        time.sleep(0.005)
    tstate["tid"] = native_id()
    tstate["timed_out"] = not slow.acquire(timeout=0.1)
    tstate["failed"] = sum(1 for _ in range(5) if not slow.acquire(False))
run(sitter, impatient)
truth["timeout"] = {"lock": id(slow), "tid": tstate["tid"], "timed_out": tstate["timed_out"],
                    "failed": tstate["failed"]}

# inversion
A, B = threading.Lock(), threading.Lock()
inv = {}
def ab():
    inv["ab"] = native_id()
    with A:
        with B:
            pass
def ba():
    inv["ba"] = native_id()
    with B:
        with A:
            pass
run(ab)
run(ba)
truth["inversion"] = {"a": id(A), "b": id(B), "ab": inv["ab"], "ba": inv["ba"]}

# reuse: contend on a lock, free it, allocate until a new lock lands on its address
def contend(lock):
    ev = threading.Event()
    def h():
        with lock:
            ev.set()
            time.sleep(0.1)
    def w():
        ev.wait()
        with lock:
            pass
    run(h, w)
first = threading.Lock()
contend(first)
address = id(first)
del first
second, spare = None, []
for _ in range(1000):
    candidate = threading.Lock()
    if id(candidate) == address:
        second = candidate
        break
    spare.append(candidate)
truth["reuse"] = {"address": address, "reused": second is not None}
if second is not None:
    contend(second)

with open(sys.argv[1], "w") as f:
    json.dump(truth, f)

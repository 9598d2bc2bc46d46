"""No false inversion (issue 11): many distinct locks, always taken in one order. 200 Locks and
50 RLocks (every fifth lock of the order is an RLock, taken twice), 4 threads each take every
window of three consecutive locks in ascending order, nested, for a few rounds; meanwhile a
producer and a consumer talk through a queue.Queue, a Condition and an Event, and threads are
started and joined (threading makes and signals its own waiter locks there). Nothing here can
deadlock or invert an order. argv[1] gets the JSON truth: each lock's id() and how many times
each thread acquired it (an RLock's re-entry counts as an acquire)."""
import json
import os
import sys
import threading

try:
    import queue
except ImportError:  # 2.7 is not traced for locks; the program still runs there
    import Queue as queue

ROUNDS = 3
THREADS = 4
locks = []
for i in range(250):
    locks.append(threading.RLock() if i % 5 == 4 else threading.Lock())
kinds = ["RLock" if i % 5 == 4 else "Lock" for i in range(len(locks))]


def native_id():
    if hasattr(threading, "get_native_id"):
        return threading.get_native_id()
    import ctypes
    return ctypes.CDLL(None, use_errno=True).syscall(186)


counts = {}  # tid -> [acquires per lock]; each thread writes only its own list


def take(i, mine):
    if kinds[i] == "RLock":
        locks[i].acquire()
        mine[i] += 1
        with locks[i]:
            mine[i] += 1
            return locks[i].release
    locks[i].acquire()
    mine[i] += 1
    return locks[i].release


def ordered():
    mine = [0] * len(locks)
    counts[native_id()] = mine
    for _ in range(ROUNDS):
        for i in range(len(locks) - 2):
            r0 = take(i, mine)
            r1 = take(i + 1, mine)
            r2 = take(i + 2, mine)
            r2()
            r1()
            r0()


q = queue.Queue()
cond = threading.Condition()
event = threading.Event()
items = []


def producer():
    for n in range(50):
        q.put(n)
        with cond:
            items.append(n)
            cond.notify()
    q.put(None)
    event.set()


def consumer():
    while q.get() is not None:
        pass
    with cond:
        while len(items) < 50:
            cond.wait()
    event.wait()


def short():
    pass


threads = [threading.Thread(target=ordered) for _ in range(THREADS)]
threads += [threading.Thread(target=producer), threading.Thread(target=consumer)]
for t in threads:
    t.start()
for _ in range(20):
    s = threading.Thread(target=short)
    s.start()
    s.join()
for t in threads:
    t.join()

with open(sys.argv[1], "w") as f:
    json.dump({"pid": os.getpid(), "locks": [id(l) for l in locks], "kinds": kinds,
               "counts": dict((str(k), v) for k, v in counts.items())}, f)

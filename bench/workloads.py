"""Benchmark workloads (Python 2.7 and 3.x). Prints one line:
RESULT <workload> <wall seconds> cpu=<process CPU seconds> [<blocking acquisitions it counted>]

CPU time includes the kernel's time in the process (where uprobe traps are charged), so it is
the steadier measure of what tracing costs the program on a noisy machine.

  threads N       start and join N threads one after another (thread lifecycle cost)
  pool N          4 threads x N/4 blocking joins of short-lived helpers (joins that wait)
  uncontended N   N x `with lock: pass` in one thread (the cost of tracing every acquire)
  contended N     4 threads x N/4 acquisitions of one lock with a little work inside and out;
                  they collide whenever the GIL switches threads while one holds the lock
  queue N         queue.Queue producer/consumer, N items, the consumer waiting when it is empty
  cpu N           4 threads spinning in Python, N iterations in all (GIL switches by request)
  handoff N       4 threads making N short blocking calls in all (os.stat: each drops and
                  re-takes the GIL)
  objects N       4 threads x N/4 rounds of extend() on one shared list and update() on one
                  shared dict (512 items each): on a free-threaded build they contend on the
                  objects' own mutexes (critical sections); with a GIL they cannot
"""
from __future__ import print_function

import sys
import threading
import time


def threads(n):
    for _ in range(n):
        t = threading.Thread(target=len, args=("",))
        t.start()
        t.join()


def pool(n):
    def helper():
        time.sleep(0.0005)

    def worker():
        for _ in range(n // 4):
            t = threading.Thread(target=helper)
            t.start()
            t.join()

    run_workers(worker)


def uncontended(n):
    lock = threading.Lock()
    for _ in range(n):
        with lock:
            pass


def contended(n):
    lock = threading.Lock()
    waits = [0]

    def worker():
        for _ in range(n // 4):
            # What lock.acquire() does inside, made visible: try, and block only if taken.
            if not lock.acquire(False):
                waits[0] += 1
                lock.acquire()
            try:
                sum(range(30))
            finally:
                lock.release()
            sum(range(30))

    run_workers(worker)
    return waits[0]


def queue_(n):
    try:
        import queue
    except ImportError:  # 2.7
        import Queue as queue
    q = queue.Queue()
    empty_waits = [0]

    def consumer():
        while True:
            try:
                item = q.get(False)
            except queue.Empty:
                empty_waits[0] += 1
                item = q.get()
            if item is None:
                return
            sum(range(50))

    c = threading.Thread(target=consumer)
    c.start()
    for i in range(n):
        q.put(i)
        if i % 10 == 0:
            time.sleep(0)
    q.put(None)
    c.join()
    return empty_waits[0]


def cpu_(n):
    def worker():
        i = 0
        while i < n // 4:
            i += 1

    run_workers(worker)


def handoff(n):
    import os

    def worker():
        for _ in range(n // 4):
            os.stat(".")

    run_workers(worker)


def objects(n):
    shared_list, shared_dict = [], {}
    chunk = list(range(512))
    chunk_dict = dict((i, i) for i in range(512))

    def worker():
        for _ in range(n // 4):
            shared_list.extend(chunk)
            shared_dict.update(chunk_dict)
            if len(shared_list) > 100000:
                del shared_list[:]  # clear() is 3.3+

    run_workers(worker)


def run_workers(worker, count=4):
    ws = [threading.Thread(target=worker) for _ in range(count)]
    for w in ws:
        w.start()
    for w in ws:
        w.join()


WORKLOADS = {"threads": threads, "pool": pool, "uncontended": uncontended,
             "contended": contended, "queue": queue_, "cpu": cpu_, "handoff": handoff,
             "objects": objects}


if __name__ == "__main__":
    name, n = sys.argv[1], int(sys.argv[2])
    # `--go FILE` (bench auto mode): wait for FILE before starting the clock, so that a daemon
    # that auto-attaches at exec has attached first. Later arguments are ignored (a marker for
    # the daemon's cmdline rule).
    if len(sys.argv) > 4 and sys.argv[3] == "--go":
        import os
        while not os.path.exists(sys.argv[4]):
            time.sleep(0.01)
    cpu = getattr(time, "process_time", None) or time.clock  # 2.7 has only clock()
    start, start_cpu = time.time(), cpu()
    counted = WORKLOADS[name](n)
    elapsed, used = time.time() - start, cpu() - start_cpu
    print("RESULT %s %.6f cpu=%.6f%s" % (name, elapsed, used,
                                         "" if counted is None else " %d" % counted))

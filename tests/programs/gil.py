"""GIL ground truth (CPython 2.7 and 3). Runs three phases one after the other and writes, to
argv[1], each phase's threads (native tids), switch interval and wall time:

  cpu5      3 threads spin for SPIN seconds at the default 5 ms switch interval: the GIL is
            always wanted, so it changes hands about once per interval, by forced switches
            (2.7: the default check interval, 100 ticks)
  cpu1      the same at a 1 ms interval: about five times as many forced switches (2.7: every
            20 ticks)
  sleepers  4 threads each sleep 2 ms 100 times, nothing else running: every sleep drops and
            re-takes the GIL, and the takes hardly wait
"""
import json
import os
import sys
import threading
import time

SPIN = 1.0
truth = {"pid": os.getpid(), "phases": {}}


def native_id():
    """The thread's kernel tid (threading.get_native_id is 3.8+; gettid is syscall 186)."""
    if hasattr(threading, "get_native_id"):
        return threading.get_native_id()
    import ctypes
    return ctypes.CDLL(None, use_errno=True).syscall(186)


def spin():
    end = time.time() + SPIN
    n = 0
    while time.time() < end:
        n += 1


def sleeper():
    for _ in range(100):
        time.sleep(0.002)


def set_interval(seconds):
    """3.x: the switch interval; 2.7 counts ticks instead (100 by default, 20 for 1 ms)."""
    if hasattr(sys, "setswitchinterval"):
        sys.setswitchinterval(seconds)
        return sys.getswitchinterval()
    sys.setcheckinterval(int(round(seconds / 0.00005)))
    return None


def phase(name, body, count, interval):
    actual = set_interval(interval)
    tids = []
    lock = threading.Lock()

    def run():
        with lock:
            tids.append(native_id())
        body()

    threads = [threading.Thread(target=run, name="%s-%d" % (name, i)) for i in range(count)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    truth["phases"][name] = {"tids": tids, "interval": actual,
                             "wall": time.time() - t0, "threads": count}


phase("cpu5", spin, 3, 0.005)
phase("cpu1", spin, 3, 0.001)
phase("sleepers", sleeper, 4, 0.005)
with open(sys.argv[1], "w") as f:
    json.dump(truth, f)

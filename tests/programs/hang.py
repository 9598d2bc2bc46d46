"""A process that hangs on purpose in every way `threadscope dump` explains, on CPython 2.7 and
3.6+. Writes the ground truth to argv[1] once every thread is where it will stay, then sleeps
until it is killed:

  deadlock-a / deadlock-b  a two-lock deadlock: each holds one lock (`with`) and waits for the
                           other's
  rlock-holder             holds an RLock across an Event wait (the Event is never set)
  rlock-waiter             queued on that RLock
  stuck                    waits on an Event nobody sets
  joiner                   joins `stuck`
  cond-waiter              waits on a Condition nobody notifies (inside `with cond:`)
  acquire-holder           took a Lock with an explicit acquire() and waits on an Event
  acquire-waiter           queued on that Lock
  sleeper                  time.sleep
  MainThread               time.sleep, after writing the ground truth

Lock and object ids are id() in hex, as dump prints them; tids are native tids; lines are where
each thread waits and where each took what it holds.
"""
import json
import os
import sys
import threading
import time

lines = {}
tids = {}
ready = threading.Event()


def here():
    return sys._getframe(1).f_lineno


def native_tid():
    # threading.get_native_id() is 3.8+; /proc/thread-self names the calling thread everywhere.
    return int(os.readlink("/proc/thread-self").split("/")[-1])


def named(name, target):
    t = threading.Thread(target=target, name=name)
    t.daemon = True
    return t


A = threading.Lock()
B = threading.Lock()
a_has, b_has = threading.Event(), threading.Event()


def deadlock_a():
    tids["deadlock-a"] = native_tid()
    lines["a_takes_a"] = here() + 1
    with A:
        a_has.set()
        b_has.wait()
        lines["a_waits_b"] = here() + 1
        with B:
            pass


def deadlock_b():
    tids["deadlock-b"] = native_tid()
    lines["b_takes_b"] = here() + 1
    with B:
        b_has.set()
        a_has.wait()
        lines["b_waits_a"] = here() + 1
        with A:
            pass


R = threading.RLock()
never = threading.Event()
r_held = threading.Event()


def rlock_holder():
    tids["rlock-holder"] = native_tid()
    lines["holder_takes_r"] = here() + 1
    with R:
        r_held.set()
        lines["holder_waits_event"] = here() + 1
        never.wait()


def rlock_waiter():
    tids["rlock-waiter"] = native_tid()
    r_held.wait()
    lines["waiter_waits_r"] = here() + 1
    with R:
        pass


stuck_event = threading.Event()


def stuck():
    tids["stuck"] = native_tid()
    lines["stuck_waits"] = here() + 1
    stuck_event.wait()


C = threading.Condition()


def cond_waiter():
    tids["cond-waiter"] = native_tid()
    with C:
        lines["cond_waits"] = here() + 1
        C.wait()


L2 = threading.Lock()
l2_held = threading.Event()


def acquire_holder():
    tids["acquire-holder"] = native_tid()
    L2.acquire()
    try:
        l2_held.set()
        lines["acquire_holder_waits"] = here() + 1
        never.wait()
    finally:
        L2.release()


def acquire_waiter():
    tids["acquire-waiter"] = native_tid()
    l2_held.wait()
    lines["acquire_waiter_waits"] = here() + 1
    L2.acquire()


def sleeper():
    tids["sleeper"] = native_tid()
    lines["sleeps"] = here() + 1
    time.sleep(3600)


threads = {}
for name, fn in [("deadlock-a", deadlock_a), ("deadlock-b", deadlock_b),
                 ("rlock-holder", rlock_holder), ("rlock-waiter", rlock_waiter),
                 ("stuck", stuck), ("cond-waiter", cond_waiter), ("sleeper", sleeper),
                 ("acquire-holder", acquire_holder), ("acquire-waiter", acquire_waiter)]:
    threads[name] = named(name, fn)
    threads[name].start()


def joiner():
    tids["joiner"] = native_tid()
    lines["joins"] = here() + 1
    threads["stuck"].join()


threads["joiner"] = named("joiner", joiner)
threads["joiner"].start()

time.sleep(1.0)  # every thread is blocked by now (the tests wait for the file anyway)
tids["MainThread"] = native_tid()
truth = {
    "pid": os.getpid(),
    "version": "%d.%d" % sys.version_info[:2],
    "file": os.path.abspath(__file__),
    "tids": tids,
    "lines": lines,
    "locks": {"A": "0x%x" % id(A), "B": "0x%x" % id(B), "R": "0x%x" % id(R),
              "L2": "0x%x" % id(L2)},
    "objects": {"never": "0x%x" % id(never), "stuck_event": "0x%x" % id(stuck_event),
                "C": "0x%x" % id(C), "stuck_thread": "0x%x" % id(threads["stuck"])},
}
with open(sys.argv[1] + ".tmp", "w") as f:
    json.dump(truth, f)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
lines["main_sleeps"] = here() + 1
time.sleep(3600)

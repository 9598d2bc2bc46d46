"""Objects and threads dump_live_test reads from outside (CPython 2.7 and 3.6+): each line it
prints is a fact the reader must find in this process's memory. Then it sleeps until killed:
the main thread inside `with L:` in main_sleeps, `holder-thread` inside `with R:` waiting on an
Event, `waiter-thread` blocked on the lock the main thread acquired."""
import os
import sys
import threading
import time


def tid():
    return int(os.readlink("/proc/thread-self").split("/")[-1])


class Plain(object):
    def __init__(self):
        self.alpha = "first"
        self.beta = 12345
        self.gamma = -7


class Many(object):
    pass


plain = Plain()
many = Many()
for i in range(40):
    setattr(many, "attr%d" % i, i)
materialized = Plain()
materialized.__dict__  # 3.11+: the inline values become a dict
materialized.delta = "late"
text = "caf\u00e9 \U0001f40d" if sys.version_info[0] >= 3 else "plain ascii"
big = 2 ** 62 + 5
L = threading.Lock()
held = threading.Lock()
held.acquire()
free = threading.Lock()
R = threading.RLock()
ev = threading.Event()
tids = {}


def holder():
    tids["holder"] = tid()
    with R:
        ev.wait()


def waiter():
    tids["waiter"] = tid()
    with held:
        pass


for name, fn in (("holder-thread", holder), ("waiter-thread", waiter)):
    t = threading.Thread(target=fn, name=name)
    t.daemon = True
    t.start()
time.sleep(0.5)
out = [
    "pid %d" % os.getpid(),
    "attr 0x%x alpha str first" % id(plain),
    "attr 0x%x beta int 12345" % id(plain),
    "attr 0x%x gamma int -7" % id(plain),
    "attr 0x%x attr39 int 39" % id(many),
    "attr 0x%x delta str late" % id(materialized),
    "attr 0x%x alpha str first" % id(materialized),
    "int 0x%x %d" % (id(big), big),
    "type 0x%x Plain" % id(plain),
    "lock 0x%x 1" % id(held),
    "lock 0x%x 0" % id(free),
    "held 0x%x" % id(held),
    "L 0x%x" % id(L),
    "R 0x%x" % id(R),
    "tid main %d" % tid(),
    "tid holder %d" % tids["holder"],
    "tid waiter %d" % tids["waiter"],
]
if sys.version_info[0] >= 3:
    out.append("str 0x%x %s" % (id(text), text.encode("utf-8").hex()))
sys.stdout.write("\n".join(out) + "\nready\n")
sys.stdout.flush()


def main_sleeps():
    with L:
        time.sleep(600)


main_sleeps()

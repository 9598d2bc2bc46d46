"""Something for every dashboard panel to show, for SECONDS (argv[1]): GIL contention (two
spinning threads), lock contention and timeouts, and threads starting all along."""
import sys
import threading
import time

end = time.time() + float(sys.argv[1])
lock = threading.Lock()


def spin():
    while time.time() < end:
        sum(range(1000))


def contend():
    while time.time() < end:
        with lock:
            time.sleep(0.002)
        time.sleep(0.001)


def time_out():
    while time.time() < end:
        if lock.acquire(timeout=0.0005):
            lock.release()
        time.sleep(0.01)


workers = [threading.Thread(target=f) for f in (spin, spin, contend, contend, contend, time_out)]
for w in workers:
    w.start()
while time.time() < end:
    t = threading.Thread(target=time.sleep, args=(0.01,))
    t.start()
    t.join()
    time.sleep(0.2)
for w in workers:
    w.join()

"""A workload whose lock contention is set by its argument, for the CI gate's tests.

  contention.py HOLD [ROUNDS]

Each round, a holder takes the lock and keeps it HOLD seconds while three waiters, started at
the same moment, try it 1 ms later: with HOLD >= 5 ms every waiter waits (3 contended
acquisitions per round), with HOLD = 0 nobody does. Rounds are released through pipes, not
Python locks, so nothing else in the program contends.
"""
import os
import sys
import threading
import time

hold = float(sys.argv[1])
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
lock = threading.Lock()
done_r, done_w = os.pipe()


def worker(go, holder):
    while os.read(go, 1) == b"g":
        if holder:
            with lock:
                time.sleep(hold)
        else:
            time.sleep(0.001)
            with lock:
                pass
        os.write(done_w, b"d")


pipes = [os.pipe() for _ in range(4)]
threads = [threading.Thread(target=worker, args=(r, i == 0)) for i, (r, _) in enumerate(pipes)]
for t in threads:
    t.start()
for _ in range(rounds):
    for _, w in pipes:
        os.write(w, b"g")
    for _ in range(4):
        os.read(done_r, 1)
for _, w in pipes:
    os.write(w, b"q")
for t in threads:
    t.join()

"""Benchmark workloads (Python 2.7 and 3.x). Prints one line: RESULT <workload> <seconds>.

  threads N     start and join N threads one after another (thread lifecycle cost)
  pool N        4 threads x N/4 blocking joins of short-lived helpers (joins that wait)
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

    ws = [threading.Thread(target=worker) for _ in range(4)]
    for w in ws:
        w.start()
    for w in ws:
        w.join()


if __name__ == "__main__":
    name, n = sys.argv[1], int(sys.argv[2])
    start = time.time()
    globals()[name](n)
    print("RESULT %s %.6f" % (name, time.time() - start))

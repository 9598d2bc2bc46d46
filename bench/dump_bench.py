#!/usr/bin/env python3
"""How long `threadscope dump` stops a process, next to gdb's `gcore`.

A target with N threads (blocked on a lock, an Event, or sleeping, as a hung service's are)
also runs a watchdog thread that wakes every millisecond and records every gap longer than
3 ms: what the program itself experienced as a stop, whoever caused it. For each N, interleaved:

  dump        `threadscope dump PID -o json`: its own pause_ns (first PTRACE_INTERRUPT to last
              detach) and its phases, the watchdog's gap, and the CLI's wall time
  nonblocking `threadscope dump PID --nonblocking`: wall time (it never stops the process)
  gcore       gdb's `gcore -o FILE PID`: wall time, the watchdog's gap, the core's size
  idle        nothing, for as long as a dump takes: the watchdog's own floor on this machine
              (a sleeping thread is not always woken on time when other processes run)

py-spy and pystack are not measured: neither installs here (PyPI is not reachable).

  bench/dump_bench.py --threadscope bazel-bin/client/threadscope [--python LABEL|PATH]
      [--runs 15] [--threads 10,100]
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import parse_args

TARGET = r"""
import json, os, sys, threading, time
n = int(sys.argv[1])
lock = threading.Lock()
lock.acquire()
event = threading.Event()
def blocked(i):
    if i % 3 == 0:
        event.wait()
    elif i % 3 == 1:
        time.sleep(3600)
    else:
        with lock:
            pass
gaps = []
def watchdog():
    last = time.monotonic()
    while True:
        time.sleep(0.001)
        now = time.monotonic()
        if now - last > 0.003:
            gaps.append((last, now))
        last = now
threading.Thread(target=watchdog, daemon=True).start()
for i in range(n - 2):
    threading.Thread(target=blocked, args=(i,), daemon=True).start()
time.sleep(0.5)
sys.stdout.write("ready %d\n" % os.getpid())
sys.stdout.flush()
for line in sys.stdin:
    # "gaps T0 T1": the longest stop seen within [T0, T1] (CLOCK_MONOTONIC seconds).
    _, t0, t1 = line.split()
    inside = [b - a for a, b in gaps if b >= float(t0) and a <= float(t1)]
    sys.stdout.write("%f\n" % (max(inside) if inside else 0.0))
    sys.stdout.flush()
"""


class Target:
    def __init__(self, interp, n):
        self.p = subprocess.Popen(interp.argv + ["-c", TARGET, str(n)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        self.pid = int(line.split()[1])

    def longest_gap(self, t0, t1):
        time.sleep(0.02)  # let the watchdog wake up and record the gap
        self.p.stdin.write("gaps %f %f\n" % (t0, t1))
        self.p.stdin.flush()
        return float(self.p.stdout.readline())

    def close(self):
        self.p.kill()
        self.p.wait()


def ms(values):
    return "%.2f" % (statistics.median(values) * 1e3) if values else "-"


def p90(values):
    if not values:
        return "-"
    s = sorted(values)
    return "%.2f" % (s[min(len(s) - 1, int(0.9 * len(s)))] * 1e3)


def main():
    args = parse_args(runs=15, extra=lambda ap: ap.add_argument("--threads", default="10,100"))
    tmp = tempfile.mkdtemp(prefix="ts_dump_bench_")
    print("interpreter: %s; %d runs per mode, interleaved; load average %s" %
          (args.python, args.runs, open("/proc/loadavg").read().split()[:3]))
    for n in [int(x) for x in args.threads.split(",")]:
        target = Target(args.interp, n)
        r = {k: [] for k in ("pause", "dump_gap", "dump_wall", "nonblocking_wall", "gcore_wall",
                             "gcore_gap", "core_mb", "idle_gap")}
        phases = {}
        try:
            for _ in range(args.runs):
                t0 = time.monotonic()
                out = subprocess.run([args.threadscope, "dump", str(target.pid), "-o", "json"],
                                     capture_output=True, text=True, check=True)
                t1 = time.monotonic()
                d = json.loads(out.stdout)
                r["pause"].append(d["pause_ns"] / 1e9)
                for name, ns in d["pause_phases_ns"].items():
                    phases.setdefault(name, []).append(ns / 1e9)
                r["dump_wall"].append(t1 - t0)
                r["dump_gap"].append(target.longest_gap(t0, t1))

                t0 = time.monotonic()
                time.sleep(r["dump_wall"][-1])
                r["idle_gap"].append(target.longest_gap(t0, time.monotonic()))

                t0 = time.monotonic()
                subprocess.run([args.threadscope, "dump", str(target.pid), "--nonblocking"],
                               capture_output=True, check=True)
                r["nonblocking_wall"].append(time.monotonic() - t0)

                prefix = os.path.join(tmp, "core")
                t0 = time.monotonic()
                subprocess.run(["gcore", "-o", prefix, str(target.pid)], capture_output=True,
                               check=True)
                t1 = time.monotonic()
                r["gcore_wall"].append(t1 - t0)
                r["gcore_gap"].append(target.longest_gap(t0, t1))
                core = "%s.%d" % (prefix, target.pid)
                r["core_mb"].append(os.path.getsize(core) / 1e9)  # shown as MB by ms()
                os.unlink(core)
        finally:
            target.close()
        print("\n%d threads (medians; p90 in brackets), ms" % n)
        print("  threadscope dump: pause %s [%s], watchdog saw %s [%s], CLI wall %s" %
              (ms(r["pause"]), p90(r["pause"]), ms(r["dump_gap"]), p90(r["dump_gap"]),
               ms(r["dump_wall"])))
        print("    phases: " + ", ".join("%s %s" % (k, ms(v)) for k, v in phases.items()))
        print("  idle (no dump): watchdog saw %s [%s]" % (ms(r["idle_gap"]), p90(r["idle_gap"])))
        print("  threadscope dump --nonblocking: wall %s (no stop)" % ms(r["nonblocking_wall"]))
        print("  gcore: wall %s [%s], watchdog saw %s [%s], core %s MB" %
              (ms(r["gcore_wall"]), p90(r["gcore_wall"]), ms(r["gcore_gap"]), p90(r["gcore_gap"]),
               ms(r["core_mb"])))
    print("\nload average after: %s" % open("/proc/loadavg").read().split()[:3])


if __name__ == "__main__":
    sys.exit(main())

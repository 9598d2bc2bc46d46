#!/usr/bin/env python3
"""Thread-lifecycle tracing cost, measured side by side in one run.

For each workload, alternates (to cancel drift on a noisy machine):
  untraced    the workload alone
  threadscope `threadscope run --locks off --gil off`: the lifecycle probes only
  bpftrace    bpftrace counting hits on exactly the sites threadscope placed (taken from its
              own report), the floor for any uprobe-based tracer on these sites
and reports medians, ratios to untraced, and the cost per started thread. Also times attach
and detach. Needs root, bpftrace, and tracefs (mounted here if missing, for bpftrace).

  bench/lifecycle_bench.py --threadscope bazel-bin/client/threadscope
      [--python LABEL|PATH] [--bpftrace sid|none]
"""
import statistics
import subprocess
import sys
import time

from benchlib import Bench, parse_args

# Lifecycle probes only: bench/locks_bench.py and bench/gil_bench.py measure the rest.
LIFECYCLE = ["--locks", "off", "--gil", "off"]
MODES = {"untraced": "untraced", "threadscope": LIFECYCLE, "bpftrace": ("bpftrace", LIFECYCLE)}


def main():
    args = parse_args(runs=7, extra=lambda ap: ap.add_argument("--threads", type=int,
                                                                default=2000))
    bench = Bench(args.threadscope, args.interp, MODES, args.runs, args.bpftrace)
    print("interpreter: %s; %d runs per mode, interleaved; medians" % (args.python, args.runs))
    for workload, n in [("threads", args.threads), ("pool", args.threads)]:
        results = bench.measure(workload, n)
        bench.print_table("%s (%d thread starts)" % (workload, n), results)
        base = statistics.median(results["untraced"]["wall"])
        for mode in ("threadscope", "bpftrace"):
            if results[mode]["wall"]:
                print("  %s: %+.1f us of wall time per started thread" %
                      (mode, (statistics.median(results[mode]["wall"]) - base) / n * 1e6))

    # Attach and detach latency on an idle target.
    attach, detach = [], []
    for _ in range(args.runs):
        target = args.interp.popen(["-c", "import time; time.sleep(60)"])
        time.sleep(0.2)
        t0 = time.time()
        cli = subprocess.Popen([args.threadscope, "attach", str(target.pid), "--no-live"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        cli.stderr.readline()
        t1 = time.time()
        cli.send_signal(2)
        cli.wait()
        t2 = time.time()
        attach.append(t1 - t0)
        detach.append(t2 - t1)
        target.kill()
        target.wait()
    print("\nattach (CLI start to probes live, in-process engine): %.0f ms median" %
          (statistics.median(attach) * 1000))
    print("detach (SIGINT to CLI exit, includes the final report): %.0f ms median" %
          (statistics.median(detach) * 1000))


if __name__ == "__main__":
    sys.exit(main())

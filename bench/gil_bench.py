#!/usr/bin/env python3
"""GIL tracing cost, measured side by side in one run.

Workloads (bench/workloads.py):
  cpu N       4 threads spinning in Python, N loop iterations in all, at the default 5 ms switch
              interval: the GIL changes hands ~200 times a second, by forced switches
  handoff N   4 threads making N short blocking calls in all (os.stat): every call drops and
              re-takes the GIL, the worst case for GIL tracing

Modes, interleaved:
  untraced      the workload alone
  lifecycle     threadscope run --locks off --gil off (thread lifecycle probes only)
  gil           threadscope run --locks off (lifecycle + GIL)
  bpftrace-gil  bpftrace counting hits on exactly the sites `gil` placed: the uprobe floor
  gil-stacks    `gil` with --gil-stacks 8 (a stack for waits of at least the default 1 ms)
  gil-stacks-1us `gil` with --gil-stacks 8 --gil-stack-threshold 1us: a stack walk at nearly
                every take that waited at all
  default       threadscope run (contended locks + GIL: what users get)

  bench/gil_bench.py --threadscope bazel-bin/client/threadscope
      [--python LABEL|PATH] [--bpftrace sid|none]

"switches" is the median number of GIL switches threadscope saw in the `gil` runs.
"""
import statistics
import sys

from benchlib import Bench, parse_args

GIL_ONLY = ["--locks", "off"]
MODES = {
    "untraced": "untraced",
    "lifecycle": ["--locks", "off", "--gil", "off"],
    "gil": GIL_ONLY,
    "bpftrace-gil": ("bpftrace", GIL_ONLY),
    # What profiles of GIL waits by stack cost: the threshold test at every take's return, and
    # the worst case, a walk at every one.
    "gil-stacks": GIL_ONLY + ["--gil-stacks", "8"],
    "gil-stacks-1us": GIL_ONLY + ["--gil-stacks", "8", "--gil-stack-threshold", "1us"],
    "default": [],
}


def main():
    args = parse_args(extra=lambda ap: ap.add_argument(
        "--only", choices=["cpu", "handoff"], help="run one workload"))
    bench = Bench(args.threadscope, args.interp, MODES, args.runs, args.bpftrace)
    plan = bench.plan(GIL_ONLY)
    print("interpreter: %s (CPython %s); %d runs per mode, interleaved; medians" %
          (args.python, plan["target"]["python_version"], args.runs))
    print("GIL probes, where each sits and how the kernel runs it:")
    bench.print_sites(GIL_ONLY, ("gil_",))

    for workload, n in [("cpu", 20000000), ("handoff", 200000)]:
        if args.only and workload != args.only:
            continue
        n = int(n * args.scale)
        results = bench.measure(workload, n)
        bench.print_table("%s (n=%d)" % (workload, n), results)
        reports = results["gil"]["reports"]
        if reports:
            g = [r["gil"] for r in reports]
            print("  threadscope saw %d GIL acquisitions, %d switches (%d forced) per run "
                  "(median)" % (statistics.median(x["acquisitions"] for x in g),
                                statistics.median(x["switches"] for x in g),
                                statistics.median(x["forced_switches"] for x in g)))
        bench.print_vs_floor(results, "gil", "bpftrace-gil", "GIL tracing (--locks off)")
        life, gil = bench.added_cpu(results, "lifecycle"), bench.added_cpu(results, "gil")
        base = statistics.median(results["untraced"]["cpu"])
        if life is not None and gil is not None:
            print("  GIL probes alone: %+.2f%% CPU over lifecycle-only tracing" %
                  (100 * (gil - life) / base))
        for mode in ("gil-stacks", "gil-stacks-1us"):
            added = bench.added_cpu(results, mode)
            if gil is not None and added is not None:
                print("  %s: %+.2f%% CPU over `gil`" % (mode, 100 * (added - gil) / base))


if __name__ == "__main__":
    sys.exit(main())

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
  gil           threadscope run --locks off (lifecycle + GIL in the default --gil waits: only
                takes that wait are probed)
  gil-full      `gil` with --gil full (every take and drop: holds, switches, forced drops)
  bpftrace-gil  bpftrace counting hits on exactly the sites `gil-full` placed: the uprobe floor
  gil-stacks    `gil` with --gil-stacks 8 (a stack for waits of at least the default 1 ms)
  gil-stacks-1us `gil` with --gil-stacks 8 --gil-stack-threshold 1us: a stack walk at nearly
                every take that waited at all
  default       threadscope run (contended locks + GIL: what users get)
  auto          threadscoped --auto-attach cmdline=MARKER (a rule's defaults: contended locks,
                --gil waits, --overhead-budget 1%): attached at exec; the budget stages seen in
                its /metrics and the daemon's own CPU are printed under the table
  auto+gil-full `auto` with a rule asking for `gil = full`: the budget's step down to gil_waits
                (every take and drop traced until then) is seen in the stages printed

  bench/gil_bench.py --threadscope bazel-bin/client/threadscope
      [--python LABEL|PATH] [--bpftrace sid|none]

"switches" is the median number of GIL switches threadscope saw in the `gil-full` runs, "waited"
the takes that waited in the `gil` (--gil waits) runs.
"""
import statistics
import sys

from benchlib import Bench, parse_args

GIL_ONLY = ["--locks", "off"]
GIL_FULL = GIL_ONLY + ["--gil", "full"]
MODES = {
    "untraced": "untraced",
    "lifecycle": ["--locks", "off", "--gil", "off"],
    "gil": GIL_ONLY,
    "gil-full": GIL_FULL,
    "bpftrace-gil": ("bpftrace", GIL_FULL),
    # What profiles of GIL waits by stack cost: the threshold test at every take's return, and
    # the worst case, a walk at every one.
    "gil-stacks": GIL_ONLY + ["--gil-stacks", "8"],
    "gil-stacks-1us": GIL_ONLY + ["--gil-stacks", "8", "--gil-stack-threshold", "1us"],
    "default": [],
    # threadscoped --auto-attach cmdline=MARKER: attached at exec with a rule's defaults
    # (--overhead-budget 1%), waiting until attached before its clock starts (benchlib.AutoDaemon).
    "auto": "auto",
    # The same with a rule that asks for --gil full (every take and drop): over the 1% budget on
    # a hand-off-heavy program, the daemon steps down to gil_waits while attached.
    "auto+gil-full": ("auto", {"gil": "full"}),
}


def main():
    args = parse_args(extra=lambda ap: (
        ap.add_argument("--only", choices=["cpu", "handoff"], help="run one workload"),
        ap.add_argument("--modes", help="comma-separated modes to run (untraced always runs)")))
    modes = MODES
    if args.modes:
        want = set(args.modes.split(",")) | {"untraced"}
        modes = {k: v for k, v in MODES.items() if k in want}
    bench = Bench(args.threadscope, args.interp, modes, args.runs, args.bpftrace,
                  args.threadscoped)
    plan = bench.plan(GIL_ONLY)
    print("interpreter: %s (CPython %s); %d runs per mode, interleaved; medians" %
          (args.python, plan["target"]["python_version"], args.runs))
    print("GIL probes (--gil waits), where each sits and how the kernel runs it:")
    bench.print_sites(GIL_ONLY, ("gil_",))
    print("GIL probes (--gil full):")
    bench.print_sites(GIL_FULL, ("gil_",))

    for workload, n in [("cpu", 20000000), ("handoff", 200000)]:
        if args.only and workload != args.only:
            continue
        n = int(n * args.scale)
        results = bench.measure(workload, n)
        bench.print_table("%s (n=%d)" % (workload, n), results)
        reports = results.get("gil-full", {}).get("reports")
        if reports:
            g = [r["gil"] for r in reports]
            print("  --gil full saw %d GIL acquisitions, %d switches (%d forced) per run "
                  "(median)" % (statistics.median(x["acquisitions"] for x in g),
                                statistics.median(x["switches"] for x in g),
                                statistics.median(x["forced_switches"] for x in g)))
        reports = results.get("gil", {}).get("reports")
        if reports:
            g = [r["gil"] for r in reports]
            print("  --gil waits saw %d takes that waited, %.3fs waited per run (median)" % (
                statistics.median(x["acquisitions"] for x in g),
                statistics.median(sum(t["wait_ns"] for t in x["per_thread"]) / 1e9 for x in g)))
        if "gil-full" in modes and "bpftrace-gil" in modes:
            bench.print_vs_floor(results, "gil-full", "bpftrace-gil", "GIL tracing (--gil full)")
        life, gil = bench.added_cpu(results, "lifecycle"), bench.added_cpu(results, "gil")
        full = bench.added_cpu(results, "gil-full")
        base = statistics.median(results["untraced"]["cpu"])
        if life is not None and gil is not None:
            print("  GIL probes alone (--gil waits): %+.2f%% CPU over lifecycle-only tracing" %
                  (100 * (gil - life) / base))
        if life is not None and full is not None:
            print("  GIL probes alone (--gil full): %+.2f%% CPU over lifecycle-only tracing" %
                  (100 * (full - life) / base))
        for mode in ("gil-stacks", "gil-stacks-1us"):
            added = bench.added_cpu(results, mode)
            if gil is not None and added is not None:
                print("  %s: %+.2f%% CPU over `gil`" % (mode, 100 * (added - gil) / base))


if __name__ == "__main__":
    sys.exit(main())

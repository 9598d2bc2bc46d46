#!/usr/bin/env python3
"""Lock tracing cost, measured side by side in one run.

Workloads (bench/workloads.py): 1M uncontended `with lock:`; 4 threads contending on one lock;
a queue.Queue producer/consumer; on a free-threaded build, 4 threads contending on one list and
one dict (critical sections). Each runs, interleaved (to cancel drift on a noisy machine):

  untraced          the workload alone
  contended         threadscope run --locks=contended (the default)
  all               threadscope run --locks=all (every acquire and release)
  all+stacks        threadscope run --locks=all --acquire-stacks 8 (where each owner took it)
  default           threadscope run with no options (--locks contended, --gil waits): what
                    users get
  default+gil-full  the same with --gil full (every GIL take and drop probed)
  auto              threadscoped --auto-attach cmdline=MARKER (a rule's defaults: contended
                    locks, --gil waits, --overhead-budget 1%), attached at exec; the budget
                    stages seen in its /metrics and the daemon's CPU are printed under the table
  auto+all-stacks   `auto` with a rule asking for locks = all, acquire-stacks = 8, gil = full:
                    the budget's steps down while attached are seen in the stages printed
  bpftrace-MODE     bpftrace counting hits on exactly the sites --locks=MODE placed (taken from
                    threadscope's own report): the floor for any uprobe tracer on those sites

GIL tracing is off in every mode but default, default+gil-full and the auto modes (--gil off): bench/gil_bench.py
measures it. --modes picks some (untraced always runs).

Reported: medians, ratios to untraced, records per run, and the blocking acquisitions the
program counted itself (tracing must not change how often threads collide; in-process wrappers
inflate that number). Needs root and bpftrace; mounts tracefs for bpftrace if missing.

  bench/locks_bench.py --threadscope bazel-bin/client/threadscope
      [--python LABEL|PATH] [--bpftrace sid|none]

"blocking" is the median number of blocking acquisitions the program counted itself (for the
queue, the consumer's waits on an empty queue); "records/run" for bpftrace is its probe hits.
"""
import statistics
import sys

from benchlib import Bench, parse_args

NO_GIL = ["--gil", "off"]
MODES = {
    "untraced": "untraced",
    "contended": ["--locks", "contended"] + NO_GIL,
    "bpftrace-contended": ("bpftrace", ["--locks", "contended"] + NO_GIL),
    "all": ["--locks", "all"] + NO_GIL,
    "all+stacks": ["--locks", "all", "--acquire-stacks", "8"] + NO_GIL,
    "bpftrace-all": ("bpftrace", ["--locks", "all"] + NO_GIL),
    "default": [],
    "default+gil-full": ["--gil", "full"],
    # threadscoped --auto-attach cmdline=MARKER: attached at exec with a rule's defaults
    # (--overhead-budget 1%), waiting until attached before its clock starts (benchlib.AutoDaemon).
    "auto": "auto",
    # A rule asking for every acquire with its Python stack (and the GIL's every take and drop):
    # over the 1% budget the daemon steps down (gil_waits, no_acquire_stacks, ...) while attached.
    "auto+all-stacks": ("auto", {"locks": "all", "acquire-stacks": "8", "gil": "full"}),
}


def main():
    args = parse_args(extra=lambda ap: (
        ap.add_argument("--modes", help="comma-separated modes to run (untraced always runs)"),
        ap.add_argument("--only", help="comma-separated workloads to run")))
    modes = MODES
    if args.modes:
        want = set(args.modes.split(",")) | {"untraced"}
        modes = {k: v for k, v in MODES.items() if k in want}
    bench = Bench(args.threadscope, args.interp, modes, args.runs, args.bpftrace,
                  args.threadscoped)
    plan = bench.plan(MODES["all"])
    print("interpreter: %s (CPython %s); %d runs per mode, interleaved; medians" %
          (args.python, plan["target"]["python_version"], args.runs))
    print("probes (--locks=all), where each sits and how the kernel runs it:")
    bench.print_sites(MODES["all"], ("lock", "rlock", "sem_"))

    workloads = [("uncontended", 1000000), ("contended", 400000), ("queue", 100000)]
    if plan["target"]["free_threaded"]:
        # Contention on the objects themselves (critical sections): what a free-threaded build
        # adds; --locks=all probes its slow path.
        workloads.append(("objects", 20000))
    for workload, n in workloads:
        if args.only and workload not in args.only.split(","):
            continue
        n = int(n * args.scale)
        results = bench.measure(workload, n)
        bench.print_table("%s (n=%d)" % (workload, n), results, "blocking")
        # Distortion: what tracing did to the program's own contention (its blocking count).
        base = results["untraced"]["counted"]
        for mode in modes:
            got = results[mode]["counted"]
            if mode != "untraced" and base and got and statistics.median(base):
                print("  %-18s blocking acquisitions %+.1f%% vs untraced (%d vs %d; runs "
                      "%d-%d vs %d-%d)" % (
                          mode, 100 * (statistics.median(got) / statistics.median(base) - 1),
                          statistics.median(got), statistics.median(base), min(got), max(got),
                          min(base), max(base)))
        reports = results.get("contended", {}).get("reports")
        if reports:
            seen = [sum(l["contended"] for l in r["locks"]) +
                    sum(t["locks"]["condition_waits"] for t in r["threads"]) for r in reports]
            print("  threadscope saw %d blocking waits per run (contended mode, median)" %
                  statistics.median(seen))
        for mode in ("contended", "all"):
            if mode not in modes or "bpftrace-" + mode not in modes:
                continue
            bench.print_vs_floor(results, mode, "bpftrace-" + mode, "--locks=" + mode)


if __name__ == "__main__":
    sys.exit(main())

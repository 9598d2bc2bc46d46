#!/usr/bin/env python3
"""Lock tracing cost, measured side by side in one run.

Workloads (bench/workloads.py): 1M uncontended `with lock:`; 4 threads contending on one lock;
a queue.Queue producer/consumer. Each runs, interleaved (to cancel drift on a noisy machine):

  untraced          the workload alone
  contended         threadscope run --locks=contended (the default)
  all               threadscope run --locks=all (every acquire and release)
  all+stacks        threadscope run --locks=all --acquire-stacks 8 (where each owner took it)
  bpftrace-MODE     bpftrace counting hits on exactly the sites --locks=MODE placed (taken from
                    threadscope's own report): the floor for any uprobe tracer on those sites

Reported: medians, ratios to untraced, records per run, and the blocking acquisitions the
program counted itself (tracing must not change how often threads collide; in-process wrappers
inflate that number). Needs root and bpftrace; mounts tracefs for bpftrace if missing.

  bench/locks_bench.py --threadscope bazel-bin/client/threadscope [--python /usr/bin/python3.11]

"blocking" is the median number of blocking acquisitions the program counted itself (for the
queue, the consumer's waits on an empty queue); "records/run" for bpftrace is its probe hits.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = os.path.join(HERE, "workloads.py")
MODES = ["untraced", "contended", "bpftrace-contended", "all", "all+stacks", "bpftrace-all"]
FLAGS = {"contended": ["--locks", "contended"], "all": ["--locks", "all"],
         "all+stacks": ["--locks", "all", "--acquire-stacks", "8"]}


def parse_result(stdout):
    """(wall seconds, CPU seconds, blocking acquisitions the program counted or None)."""
    m = re.search(r"RESULT \S+ ([0-9.]+) cpu=([0-9.]+)(?: (\d+))?", stdout)
    if not m:
        raise RuntimeError("no RESULT line in: " + stdout[-500:])
    return float(m.group(1)), float(m.group(2)), (int(m.group(3)) if m.group(3) else None)


def bpftrace_script(report):
    """One counting probe per site threadscope attached, same kinds, same offsets."""
    lines = []
    for probe in report["probes"]:
        if not probe["attached"]:
            continue
        if probe["kind"] == "raw_tracepoint":
            tp = {"thread_clone": "sched:sched_process_fork",
                  "thread_exit": "sched:sched_process_exit",
                  "thread_rename": "task:task_rename",
                  "lock_wake": "raw_syscalls:sys_enter"}[probe["name"]]
            lines.append("tracepoint:%s /pid == cpid/ { @[\"%s\"] = count(); }" %
                         (tp, probe["name"]))
            continue
        kind = "uretprobe" if probe["kind"] == "uretprobe" else "uprobe"
        for site in probe["sites"]:
            lines.append("%s:%s:0x%x { @[\"%s\"] = count(); }" %
                         (kind, site["binary"], site["file_offset"], probe["name"]))
    return "\n".join(lines)


def bpftrace_hits(stdout):
    return sum(int(n) for n in re.findall(r"^@\[.*\]: (\d+)$", stdout, re.M))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threadscope", required=True)
    ap.add_argument("--python", default="/usr/bin/python3.11")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every workload size")
    args = ap.parse_args()
    if not os.path.ismount("/sys/kernel/tracing"):
        subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"], check=False)
    tmp = tempfile.mkdtemp(prefix="ts_bench_")

    scripts = {}
    for lock_mode in ("contended", "all"):
        plan_report = os.path.join(tmp, "plan-%s.json" % lock_mode)
        subprocess.run([args.threadscope, "run", "--locks", lock_mode, "--report", plan_report,
                        "--", args.python, "-c", "pass"], check=True, capture_output=True)
        plan = json.load(open(plan_report))
        scripts["bpftrace-" + lock_mode] = os.path.join(tmp, "count-%s.bt" % lock_mode)
        with open(scripts["bpftrace-" + lock_mode], "w") as f:
            f.write(bpftrace_script(plan))

    print("interpreter: %s (CPython %s); %d runs per mode, interleaved; medians" %
          (args.python, plan["target"]["python_version"], args.runs))
    print("probes (--locks=all), where each sits and how the kernel runs it:")
    plan = json.load(open(os.path.join(tmp, "plan-all.json")))
    for probe in plan["probes"]:
        if probe["name"].startswith(("lock", "rlock", "sem_")) and probe["attached"]:
            kinds = sorted({s["execution"] for s in probe["sites"]}) or ["kernel tracepoint"]
            first = probe["sites"][0]["instruction"] if probe["sites"] else ""
            print("  %-28s %3d site(s)  %-26s %s" % (probe["name"], len(probe["sites"]),
                                                     "/".join(kinds), first))

    for workload, n in [("uncontended", 1000000), ("contended", 400000), ("queue", 100000)]:
        n = int(n * args.scale)
        cmd = [args.python, WORKLOADS, workload, str(n)]
        times = {m: [] for m in MODES}
        cpus = {m: [] for m in MODES}
        counted = {m: [] for m in MODES}
        records, seen_waits = {m: [] for m in MODES}, {m: [] for m in MODES}
        hits = {m: [] for m in MODES}
        bpftrace_error = None
        for _ in range(args.runs):
            for mode in MODES:
                if mode == "untraced":
                    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
                elif mode.startswith("bpftrace"):
                    if bpftrace_error:
                        continue
                    r = subprocess.run(["bpftrace", "--unsafe", "-q", scripts[mode], "-c",
                                        " ".join(cmd)], capture_output=True, text=True)
                    if "RESULT" not in r.stdout:
                        # bpftrace 0.17 cannot place probes inside functions of binaries with
                        # symbols ("compiled without offset support"): no same-sites floor there.
                        bpftrace_error = (r.stderr.strip().splitlines() or ["failed"])[-1]
                        continue
                    hits[mode].append(bpftrace_hits(r.stdout))
                else:
                    rep = os.path.join(tmp, "r.json")
                    r = subprocess.run([args.threadscope, "run", "--no-live", "--report", rep] +
                                       FLAGS[mode] + ["--"] + cmd,
                                       capture_output=True, text=True, check=True)
                    report = json.load(open(rep))
                    records[mode].append(report["stats"]["events"])
                    if report["stats"]["drops"]:
                        print("  warning: %s dropped %d records" % (mode, report["stats"]["drops"]))
                    seen_waits[mode].append(sum(l["contended"] for l in report["locks"]) +
                                            sum(t["locks"]["condition_waits"]
                                                for t in report["threads"]))
                seconds, cpu, count = parse_result(r.stdout)
                times[mode].append(seconds)
                cpus[mode].append(cpu)
                if count is not None:
                    counted[mode].append(count)
        base = statistics.median(times["untraced"])
        base_cpu = statistics.median(cpus["untraced"])
        print("\n%s (n=%d)" % (workload, n))
        print("  %-13s %8s %7s %8s %7s %12s %10s %10s" % (
            "mode", "wall s", "ratio", "cpu s", "ratio", "records/run", "cpu us/rec",
            "blocking"))
        for mode in MODES:
            if not times[mode]:
                print("  %-13s not measured: %s" % (mode, bpftrace_error))
                continue
            med, med_cpu = statistics.median(times[mode]), statistics.median(cpus[mode])
            recs = statistics.median(records[mode]) if records[mode] else None
            if hits[mode]:
                recs = statistics.median(hits[mode])  # probe hits, not records
            per = "%10.3f" % ((med_cpu - base_cpu) / recs * 1e6) if recs else "%10s" % "-"
            blocking = ("%10d" % statistics.median(counted[mode])) if counted[mode] else ""
            print("  %-13s %8.3f %6.3fx %8.3f %6.3fx %12s %s %s" % (
                mode, med, med / base, med_cpu, med_cpu / base_cpu,
                "%d" % recs if recs else "-", per, blocking))
        if seen_waits["contended"]:
            print("  threadscope saw %d blocking waits per run (contended mode, median)" %
                  statistics.median(seen_waits["contended"]))
        for lock_mode in ("contended", "all"):
            floor_runs, runs = cpus["bpftrace-" + lock_mode], cpus[lock_mode]
            if not floor_runs or not runs:
                continue
            floor = statistics.median(floor_runs) - base_cpu
            cost = statistics.median(runs) - base_cpu
            if floor > 0:
                print("  --locks=%s added CPU vs the bpftrace floor on the same sites: %.2fx" %
                      (lock_mode, cost / floor))


if __name__ == "__main__":
    sys.exit(main())

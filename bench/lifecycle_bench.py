#!/usr/bin/env python3
"""Thread-lifecycle tracing cost, measured side by side in one run.

For each workload, alternates (to cancel drift on a noisy machine):
  untraced    the workload alone
  threadscope `threadscope run` with the lifecycle probes (the default)
  bpftrace    bpftrace counting hits on exactly the sites threadscope placed (taken from its
              own report), the floor for any uprobe-based tracer on these sites
and reports medians, ratios to untraced, and the cost per started thread. Also times attach
and detach. Needs root, bpftrace, and tracefs (mounted here if missing, for bpftrace).

  bench/lifecycle_bench.py --threadscope bazel-bin/client/threadscope [--python /usr/bin/python3.11]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = os.path.join(HERE, "workloads.py")


def result_seconds(stdout):
    m = re.search(r"RESULT \S+ ([0-9.]+)", stdout)
    if not m:
        raise RuntimeError("no RESULT line in: " + stdout[-500:])
    return float(m.group(1))


def bpftrace_script(report):
    """One counting probe per site threadscope attached, same kinds, same offsets."""
    lines = []
    for probe in report["probes"]:
        if not probe["attached"]:
            continue
        if probe["kind"] == "raw_tracepoint":
            tp = {"thread_clone": "sched:sched_process_fork", "thread_exit": "sched:sched_process_exit",
                  "thread_rename": "task:task_rename"}[probe["name"]]
            lines.append("tracepoint:%s /pid == cpid/ { @[\"%s\"] = count(); }" % (tp, probe["name"]))
            continue
        kind = "uretprobe" if probe["kind"] == "uretprobe" else "uprobe"
        for site in probe["sites"]:
            lines.append("%s:%s:0x%x { @[\"%s\"] = count(); }" %
                         (kind, site["binary"], site["file_offset"], probe["name"]))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threadscope", required=True)
    ap.add_argument("--python", default="/usr/bin/python3.11")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2000)
    args = ap.parse_args()
    if not os.path.ismount("/sys/kernel/tracing"):
        subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"], check=False)
    tmp = tempfile.mkdtemp(prefix="ts_bench_")

    # threadscope's own plan for this interpreter, to give bpftrace the same sites.
    plan_report = os.path.join(tmp, "plan.json")
    subprocess.run([args.threadscope, "run", "--report", plan_report, "--", args.python, "-c",
                    "pass"], check=True, capture_output=True)
    script = os.path.join(tmp, "count.bt")
    with open(script, "w") as f:
        f.write(bpftrace_script(json.load(open(plan_report))))

    print("interpreter: %s; %d runs per mode, interleaved; medians" % (args.python, args.runs))
    for workload, n in [("threads", args.threads), ("pool", args.threads)]:
        cmd = [args.python, WORKLOADS, workload, str(n)]
        times = {"untraced": [], "threadscope": [], "bpftrace": []}
        records = []
        bpftrace_error = None
        for _ in range(args.runs):
            r = subprocess.run(cmd, capture_output=True, text=True, check=True)
            times["untraced"].append(result_seconds(r.stdout))
            rep = os.path.join(tmp, "r.json")
            r = subprocess.run([args.threadscope, "run", "--report", rep, "--"] + cmd,
                               capture_output=True, text=True, check=True)
            times["threadscope"].append(result_seconds(r.stdout))
            records.append(json.load(open(rep))["stats"]["events"])
            # bpftrace starts the workload itself; cpid in the script is its pid.
            wrapper = "%s %s %s %d" % (args.python, WORKLOADS, workload, n)
            if bpftrace_error is None:
                r = subprocess.run(["bpftrace", "--unsafe", "-q", script, "-c", wrapper],
                                   capture_output=True, text=True)
                if "RESULT" in r.stdout:
                    times["bpftrace"].append(result_seconds(r.stdout))
                else:
                    # bpftrace 0.17 cannot place probes inside functions of binaries that have
                    # symbols ("compiled without offset support"): no same-sites floor there.
                    bpftrace_error = (r.stderr.strip().splitlines() or ["failed"])[-1]
        base = statistics.median(times["untraced"])
        print("\n%s (%d thread starts): threadscope recorded %d records per run (median)" %
              (workload, n, statistics.median(records)))
        print("  %-12s %10s %8s %16s" % ("mode", "seconds", "ratio", "added us/thread"))
        for mode in ("untraced", "threadscope", "bpftrace"):
            if not times[mode]:
                print("  %-12s not measured: %s" % (mode, bpftrace_error))
                continue
            med = statistics.median(times[mode])
            print("  %-12s %10.3f %7.3fx %16.1f" % (mode, med, med / base, (med - base) / n * 1e6))

    # Attach and detach latency on an idle target.
    attach, detach = [], []
    for _ in range(args.runs):
        target = subprocess.Popen([args.python, "-c", "import time; time.sleep(60)"])
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

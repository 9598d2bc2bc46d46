"""What the benchmarks share: running a workload untraced, under threadscope and under bpftrace
on the same sites, interleaved, and printing medians side by side.

Workloads (bench/workloads.py) print "RESULT <name> <wall s> cpu=<s> [<count>]". CPU time includes
the kernel's time in the process, where uprobe traps are charged, so it is the steadier measure
of what tracing costs the program on a noisy machine.

Interpreters come from the test matrix (tests/interpreters.json): `--python` takes a label
(debian-3.11, debian-unstable-3.14, pyenv-3.12.1, an extra's) or a path. `--bpftrace sid` uses
Debian unstable's bpftrace (0.27, newer than Debian 12's 0.17) for the floors: it lives in a
second, optional root (`tools/debian-unstable-root.sh --bench`, built on first use so that the
tests never wait for it) with its own python3.13-3.15, and the interpreter is then that root's.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = os.path.join(HERE, "workloads.py")
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))
import interpreters as matrix  # noqa: E402  (the one interpreter list)

TRACEPOINTS = {"thread_clone": "sched:sched_process_fork",
               "thread_exit": "sched:sched_process_exit",
               "thread_rename": "task:task_rename",
               "lock_wake": "raw_syscalls:sys_enter"}


def parse_result(stdout):
    """(wall seconds, CPU seconds, the count the program reported or None)."""
    m = re.search(r"RESULT \S+ ([0-9.]+) cpu=([0-9.]+)(?: (\d+))?", stdout)
    if not m:
        raise RuntimeError("no RESULT line in: " + stdout[-500:])
    return float(m.group(1)), float(m.group(2)), (int(m.group(3)) if m.group(3) else None)


def bpftrace_script(report, binary=None):
    """One counting probe per site threadscope attached, same kinds, same offsets. `binary`
    replaces the interpreter's path where bpftrace sees it elsewhere (a root's interpreter seen
    from the host, or from inside the root)."""
    interpreter = report["target"]["interpreter"]
    lines = []
    for probe in report["probes"]:
        if not probe["attached"]:
            continue
        if probe["kind"] == "raw_tracepoint":
            lines.append("tracepoint:%s /pid == cpid/ { @[\"%s\"] = count(); }" %
                         (TRACEPOINTS[probe["name"]], probe["name"]))
            continue
        kind = "uretprobe" if probe["kind"] == "uretprobe" else "uprobe"
        for site in probe["sites"]:
            where = binary if binary and site["binary"] == interpreter else site["binary"]
            lines.append("%s:%s:0x%x { @[\"%s\"] = count(); }" %
                         (kind, where, site["file_offset"], probe["name"]))
    return "\n".join(lines)


# One run of a workload, any mode, takes seconds; a run still going after this is stuck.
RUN_TIMEOUT = 300


class RunStuck(Exception):
    pass


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open("/proc/%d/task/%d/children" % (p, p)) as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def where_stuck(pid):
    """Each process under `pid` and each of its threads: name, state and kernel wait channel,
    for a run that did not finish (what a hang was waiting on, without py-spy)."""
    lines = []
    for p in descendants(pid):
        try:
            cmd = open("/proc/%d/cmdline" % p, "rb").read().replace(b"\0", b" ").decode()[:120]
            lines.append("pid %d: %s" % (p, cmd))
            for t in sorted(os.listdir("/proc/%d/task" % p), key=int):
                d = "/proc/%d/task/%s/" % (p, t)
                stat = open(d + "stat").read()
                state = stat[stat.rindex(")") + 2]
                wchan = open(d + "wchan").read()
                comm = open(d + "comm").read().strip()
                lines.append("  tid %s %-15s %s %s" % (t, comm, state, wchan))
        except OSError:
            continue
    return "\n".join(lines)


def run_bounded(cmd, what, check=False):
    """subprocess.run(cmd), bounded by RUN_TIMEOUT: a stuck run raises RunStuck with where each
    thread of the process tree waits, after killing the tree (no run may hang the bench)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        stuck = where_stuck(proc.pid)
        os.killpg(proc.pid, 9)
        proc.communicate()
        raise RunStuck("%s: no result after %d s; where it waited:\n%s" %
                       (what, RUN_TIMEOUT, stuck))
    if check and proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd, stdout, stderr)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def bpftrace_hits(stdout):
    return sum(int(n) for n in re.findall(r"^@\[.*\]: (\d+)$", stdout, re.M))


def parse_args(runs=5, extra=None):
    """The options every benchmark takes; `extra(parser)` adds its own. args.interp is the
    resolved interpreter (matrix.Interpreter), args.python its label."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--threadscope", required=True)
    ap.add_argument("--python", default="debian-3.11",
                    help="a label of tests/interpreters.json, or a path")
    ap.add_argument("--bpftrace", default="bpftrace",
                    help="the bpftrace for the floors: a command, `sid` for Debian "
                         "unstable's, from the bench root, or `none` to skip the floors")
    ap.add_argument("--runs", type=int, default=runs)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every workload size")
    if extra:
        extra(ap)
    args = ap.parse_args()
    missing = requirements(args)
    if missing:
        ap.error("this benchmark needs what is not here:\n  " + "\n  ".join(missing))
    root = None
    if args.bpftrace == "sid":
        subprocess.run([os.path.join(REPO, "tools", "debian-unstable-root.sh"), "--bench"],
                       check=True)
        root = bench_root()
    args.interp = matrix.find(args.python, root=root)
    if not args.interp.present:
        ap.error("%s: %s" % (args.python, args.interp.missing))
    if root and args.interp.in_root and args.interp.root != root:
        ap.error("--bpftrace sid traces the bench root's Debian unstable interpreters, or host "
                 "ones, not %s" % args.python)
    args.python = args.interp.label
    return args


def requirements(args):
    """What a benchmark needs that is missing, each with how to get it: checked before anything
    runs, so a first run ends with one clear message, not a traceback."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root: threadscope and bpftrace load BPF programs (run it with sudo)")
    if not os.access(args.threadscope, os.X_OK):
        missing.append("%s is not an executable: bazel build //client:threadscope, then "
                       "--threadscope bazel-bin/client/threadscope" % args.threadscope)
    if args.bpftrace not in ("sid", "none") and not shutil.which(args.bpftrace):
        missing.append("bpftrace (%r is not on PATH), for the floors: tools/install-deps.sh "
                       "installs Debian's (apt-get install bpftrace); --bpftrace sid uses Debian "
                       "unstable's from the bench root (built on first use); --bpftrace none "
                       "skips the floors" % args.bpftrace)
    return missing


def bench_root():
    """Where `tools/debian-unstable-root.sh --bench` puts the bench root."""
    return os.environ.get("THREADSCOPE_DEBIAN_UNSTABLE_BENCH_ROOT") or (
        matrix.debian_unstable_root() + "-bench")


class Bench:
    """modes: name -> threadscope flags (a list), "untraced", or ("bpftrace", flags): bpftrace
    counting hits on the sites threadscope places with those flags. `python`: a
    matrix.Interpreter (or a path); `bpftrace`: a command, or "sid" (the bench root's)."""

    def __init__(self, threadscope, python, modes, runs, bpftrace="bpftrace"):
        if not os.path.ismount("/sys/kernel/tracing"):  # bpftrace needs tracefs
            subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"],
                           check=False)
        if isinstance(python, str):
            python = matrix.find(python)
        self.threadscope, self.interp, self.modes, self.runs = threadscope, python, modes, runs
        self.python = python.argv  # how to run it
        # bpftrace and the path of the interpreter as bpftrace sees it.
        if bpftrace == "none":
            self.bpftrace = None
            self.bpftrace_binary, self.bpftrace_python = None, python.argv
        elif bpftrace == "sid" and python.in_root:
            self.bpftrace = [matrix.IN_ROOT, python.root, "/usr/bin/bpftrace"]
            self.bpftrace_binary, self.bpftrace_python = python.path, [python.path]
        elif bpftrace == "sid":
            # A host interpreter (pyenv's, an extra's; full symbols): bpftrace 0.27 places probes
            # inside functions of such binaries, which Debian 12's 0.17 cannot. It runs in the
            # bench root and starts the host interpreter there: its directory is bound at the
            # same path (tools/in-root), and the interpreter finds its libpython by rpath.
            os.environ["THREADSCOPE_IN_ROOT_BIND"] = ":".join(
                filter(None, [os.environ.get("THREADSCOPE_IN_ROOT_BIND"),
                              os.path.dirname(os.path.dirname(python.binary))]))
            self.bpftrace = [matrix.IN_ROOT, bench_root(), "/usr/bin/bpftrace"]
            self.bpftrace_binary, self.bpftrace_python = None, python.argv
        else:
            self.bpftrace = [bpftrace]
            self.bpftrace_binary = python.binary if python.in_root else None
            # bpftrace 0.17's -c runs ELF files only: tools/in-root goes through bash (which
            # execs, so bpftrace's child pid is still the interpreter's).
            self.bpftrace_python = (["/bin/bash"] if python.in_root else []) + python.argv
        self.tmp = tempfile.mkdtemp(prefix="ts_bench_")
        self.scripts, self.plans = {}, {}
        for name, mode in modes.items():
            if isinstance(mode, tuple) and self.bpftrace:
                plan = self.plan(mode[1])
                self.scripts[name] = os.path.join(self.tmp, name + ".bt")
                with open(self.scripts[name], "w") as f:
                    f.write(bpftrace_script(plan, self.bpftrace_binary))

    def plan(self, flags):
        """threadscope's report for `flags` on an empty program: its probes and sites."""
        key = " ".join(flags)
        if key not in self.plans:
            path = os.path.join(self.tmp, "plan-%d.json" % len(self.plans))
            subprocess.run([self.threadscope, "run"] + flags + ["--report", path, "--"] +
                           self.python + ["-c", "pass"], check=True, capture_output=True)
            self.plans[key] = json.load(open(path))
        return self.plans[key]

    def measure(self, workload, n, on_report=None):
        """Runs every mode `runs` times, interleaved. Returns mode -> dict of lists: wall, cpu,
        counted (the program's own count), records (threadscope records or bpftrace hits)."""
        cmd = self.python + [WORKLOADS, workload, str(n)]
        bpftrace_cmd = self.bpftrace_python + [WORKLOADS, workload, str(n)]
        out = {m: {"wall": [], "cpu": [], "counted": [], "records": [], "reports": []}
               for m in self.modes}
        failed = {}
        for _ in range(self.runs):
            for name, mode in self.modes.items():
                if name in failed:
                    continue
                what = "%s %s" % (workload, name)
                if mode == "untraced":
                    r = run_bounded(cmd, what, check=True)
                elif isinstance(mode, tuple) and not self.bpftrace:
                    failed[name] = "skipped (--bpftrace none)"
                    continue
                elif isinstance(mode, tuple):
                    r = run_bounded(self.bpftrace + ["--unsafe", "-q", self.scripts[name],
                                                      "-c", " ".join(bpftrace_cmd)], what)
                    if "RESULT" not in r.stdout:
                        failed[name] = (r.stderr.strip().splitlines() or ["failed"])[-1]
                        continue
                    out[name]["records"].append(bpftrace_hits(r.stdout))
                else:
                    rep = os.path.join(self.tmp, "r.json")
                    r = run_bounded([self.threadscope, "run", "--no-live", "--report", rep] +
                                    mode + ["--"] + cmd, what, check=True)
                    report = json.load(open(rep))
                    out[name]["records"].append(report["stats"]["events"])
                    out[name]["reports"].append(report)
                    if report["stats"]["drops"]:
                        print("  warning: %s dropped %d records" % (name,
                                                                   report["stats"]["drops"]))
                seconds, cpu, count = parse_result(r.stdout)
                out[name]["wall"].append(seconds)
                out[name]["cpu"].append(cpu)
                if count is not None:
                    out[name]["counted"].append(count)
        for name, why in failed.items():
            out[name]["failed"] = why
        return out

    def print_table(self, title, results, count_label="counted"):
        base = statistics.median(results["untraced"]["wall"])
        base_cpu = statistics.median(results["untraced"]["cpu"])
        print("\n" + title)
        print("  %-18s %8s %7s %8s %7s %12s %10s %10s" % (
            "mode", "wall s", "ratio", "cpu s", "ratio", "records/run", "cpu us/rec",
            count_label))
        for name in self.modes:
            r = results[name]
            if not r["wall"]:
                print("  %-18s not measured: %s" % (name, r.get("failed", "?")))
                continue
            med, med_cpu = statistics.median(r["wall"]), statistics.median(r["cpu"])
            recs = statistics.median(r["records"]) if r["records"] else None
            per = "%10.3f" % ((med_cpu - base_cpu) / recs * 1e6) if recs else "%10s" % "-"
            counted = ("%10d" % statistics.median(r["counted"])) if r["counted"] else ""
            print("  %-18s %8.3f %6.3fx %8.3f %6.3fx %12s %s %s" % (
                name, med, med / base, med_cpu, med_cpu / base_cpu,
                "%d" % recs if recs else "-", per, counted))

    @staticmethod
    def added_cpu(results, mode):
        """Median CPU a mode added over the untraced runs (seconds), or None."""
        if mode not in results or not results[mode]["cpu"]:
            return None
        return statistics.median(results[mode]["cpu"]) - statistics.median(
            results["untraced"]["cpu"])

    def print_vs_floor(self, results, mode, floor_mode, what):
        cost, floor = self.added_cpu(results, mode), self.added_cpu(results, floor_mode)
        if cost is not None and floor and floor > 0:
            print("  %s added CPU vs the bpftrace floor on the same sites: %.2fx" %
                  (what, cost / floor))

    def print_sites(self, flags, prefixes):
        """Where each probe of the plan sits and how the kernel runs its instruction."""
        for probe in self.plan(flags)["probes"]:
            if probe["name"].startswith(prefixes) and probe["attached"]:
                kinds = sorted({s["execution"] for s in probe["sites"]}) or ["kernel tracepoint"]
                first = probe["sites"][0]["instruction"] if probe["sites"] else ""
                print("  %-28s %3d site(s)  %-26s %s" % (probe["name"], len(probe["sites"]),
                                                         "/".join(kinds), first))

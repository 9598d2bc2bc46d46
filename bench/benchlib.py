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
import threading
import time
import urllib.request

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
    ap.add_argument("--threadscoped",
                    help="the daemon, for the `auto` mode (default: beside --threadscope, "
                         "bazel-bin/daemon/threadscoped)")
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
    if not args.threadscoped:
        args.threadscoped = os.path.join(os.path.dirname(os.path.dirname(
            os.path.abspath(args.threadscope))), "daemon", "threadscoped")
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


def is_auto(mode):
    """A mode run under an auto-attach daemon: "auto" (a rule's defaults) or ("auto", {rule
    options as the config file spells them}), e.g. ("auto", {"gil": "full"})."""
    return mode == "auto" or (isinstance(mode, tuple) and mode[0] == "auto")


class AutoDaemon:
    """threadscoped with one auto-attach rule at its defaults (`--auto-attach cmdline=MARKER`,
    so the default `--overhead-budget 1%`), for the `auto` mode: the workload is started with
    MARKER in its argv and attached at exec. It waits (`--go FILE`) until the daemon's metrics
    show it attached, so the timed part runs traced from its first instruction; the wait itself
    is outside the workload's clock. /metrics is scraped every 0.5 s while it runs and once
    after it exits (the target's series are retained): the budget stages seen, their changes
    and the estimated cost ratio. The daemon's own CPU over the run comes from /proc."""

    SCRAPE_EVERY = 0.5

    def __init__(self, threadscoped, tmp, rule_options=None):
        """rule_options: a rule's trace options as the config file spells them ({"gil": "full"}):
        the rule is then given in a config file (`[rule bench]`), else on the command line."""
        self.tmp = tmp
        self.marker = "tsbenchauto" + os.urandom(4).hex()
        self.sock = os.path.join(tmp, self.marker + ".sock")
        self.log_path = os.path.join(tmp, self.marker + ".log")
        self.log = open(self.log_path, "w")
        rule = ["--auto-attach", "cmdline=" + self.marker]
        if rule_options:
            config = os.path.join(tmp, self.marker + ".conf")
            with open(config, "w") as f:
                f.write("[rule bench]\nmatch = cmdline=%s\n" % self.marker)
                f.writelines("%s = %s\n" % kv for kv in sorted(rule_options.items()))
            rule = ["--config", config]
        self.proc = subprocess.Popen(
            [threadscoped, "--socket", self.sock, "--metrics-addr", "127.0.0.1:0"] + rule,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = None
        deadline = time.time() + 30
        while time.time() < deadline and self.proc.poll() is None:
            m = re.search(r"metrics on http://[^ ]*:(\d+)/metrics", open(self.log_path).read())
            if m and "listening on unix:" in open(self.log_path).read():
                self.url = "http://127.0.0.1:%s/metrics" % m.group(1)
                break
            time.sleep(0.05)
        if not self.url:
            self.stop()
            raise RuntimeError("threadscoped did not start: " + open(self.log_path).read())
        self.runs = 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def cpu_seconds(self):
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def scrape(self, pid):
        """The target's budget series in /metrics now: (attached, stage, applied, est ratio,
        budget ratio), None for what is not there."""
        try:
            text = urllib.request.urlopen(self.url, timeout=5).read().decode()
        except OSError:
            return None
        tag = 'pid="%d"' % pid
        attached, stage, applied, est, budget = False, None, None, None, None
        for line in text.splitlines():
            if tag not in line or line.startswith("#"):
                continue
            if line.startswith("threadscope_target_info{"):
                attached = True
            elif line.startswith("threadscope_budget_stage{"):
                stage = re.search(r'stage="([^"]*)"', line).group(1)
                applied = re.search(r'applied="([^"]*)"', line).group(1)
            elif line.startswith("threadscope_budget_estimated_cost_ratio{"):
                est = float(line.rsplit(" ", 1)[1])
            elif line.startswith("threadscope_budget_ratio{"):
                budget = float(line.rsplit(" ", 1)[1])
        return attached, stage, applied, est, budget

    def run(self, cmd, what):
        """Runs cmd + [--go FILE, MARKER] attached; (CompletedProcess, what was seen)."""
        self.runs += 1
        go = os.path.join(self.tmp, "%s-%d.go" % (self.marker, self.runs))
        cpu0, t0 = self.cpu_seconds(), time.time()
        proc = subprocess.Popen(cmd + ["--go", go, self.marker], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        seen = {"stages": [], "est": [], "budget": None, "attach_s": None}

        def note(s):
            if not s:
                return
            _, stage, applied, est, budget = s
            if stage is not None:
                label = "%s%s" % (stage, "" if applied == "true" else "(advisory)")
                if not seen["stages"] or seen["stages"][-1] != label:
                    seen["stages"].append(label)
            if est is not None:
                seen["est"].append(est)
            if budget is not None:
                seen["budget"] = budget

        try:
            while proc.poll() is None and time.time() < t0 + 30:
                s = self.scrape(proc.pid)
                if s and s[0]:
                    seen["attach_s"] = time.time() - t0
                    note(s)
                    break
                time.sleep(0.02)
            open(go, "w").close()  # attached (or not after 30 s: then it runs untraced)
            out = []
            reader = threading.Thread(target=lambda: out.append(proc.communicate()))
            reader.start()
            deadline = time.time() + RUN_TIMEOUT
            while reader.is_alive() and time.time() < deadline:
                reader.join(self.SCRAPE_EVERY)
                if reader.is_alive():
                    note(self.scrape(proc.pid))
            if reader.is_alive():
                stuck = where_stuck(proc.pid)
                os.killpg(proc.pid, 9)
                reader.join()
                raise RunStuck("%s: no result after %d s; where it waited:\n%s" %
                               (what, RUN_TIMEOUT, stuck))
            note(self.scrape(proc.pid))  # the retained target's last values
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
        seen["daemon_cpu"] = self.cpu_seconds() - cpu0
        stdout, stderr = out[0]
        if proc.returncode:
            raise subprocess.CalledProcessError(proc.returncode, cmd, stdout, stderr)
        return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), seen


class Bench:
    """modes: name -> threadscope flags (a list), "untraced", or ("bpftrace", flags): bpftrace
    counting hits on the sites threadscope places with those flags. `python`: a
    matrix.Interpreter (or a path); `bpftrace`: a command, or "sid" (the bench root's)."""

    def __init__(self, threadscope, python, modes, runs, bpftrace="bpftrace", threadscoped=None):
        if not os.path.ismount("/sys/kernel/tracing"):  # bpftrace needs tracefs
            subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"],
                           check=False)
        if isinstance(python, str):
            python = matrix.find(python)
        self.threadscope, self.interp, self.modes, self.runs = threadscope, python, modes, runs
        self.threadscoped = threadscoped
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
            if isinstance(mode, tuple) and not is_auto(mode) and self.bpftrace:
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
        out = {m: {"wall": [], "cpu": [], "counted": [], "records": [], "reports": [],
                   "auto": []} for m in self.modes}
        failed = {}
        # `auto` modes: one daemon per mode and workload, up through its runs of every mode
        # (idle while the other modes run: it watches execs, and none matches its rule).
        daemons = {}
        try:
            for name, mode in self.modes.items():
                if is_auto(mode):
                    daemons[name] = AutoDaemon(self.threadscoped, self.tmp,
                                               None if mode == "auto" else mode[1])
            self._measure(cmd, bpftrace_cmd, workload, out, failed, daemons)
        finally:
            for daemon in daemons.values():
                daemon.stop()
        for name, why in failed.items():
            out[name]["failed"] = why
        return out

    def _measure(self, cmd, bpftrace_cmd, workload, out, failed, daemons):
        for _ in range(self.runs):
            for name, mode in self.modes.items():
                if name in failed:
                    continue
                what = "%s %s" % (workload, name)
                if mode == "untraced":
                    r = run_bounded(cmd, what, check=True)
                elif is_auto(mode):
                    r, seen = daemons[name].run(cmd, what)
                    out[name]["auto"].append(seen)
                elif not self.bpftrace and isinstance(mode, tuple):
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
        self.print_auto(results)

    def print_auto(self, results):
        """What the auto-attach daemon did in the runs of each `auto` mode."""
        for name, mode in self.modes.items():
            if is_auto(mode) and results.get(name, {}).get("auto"):
                self._print_auto(results, name)

    def _print_auto(self, results, name):
        runs = results[name]["auto"]
        base_cpu = statistics.median(results["untraced"]["cpu"])
        cpus = results[name]["cpu"]
        print("  %s: CPU ratio vs untraced per run %s (spread %.3f-%.3fx); untraced runs "
              "%.3f-%.3f s" % (name, " ".join("%.3fx" % (c / base_cpu) for c in cpus),
                               min(cpus) / base_cpu, max(cpus) / base_cpu,
                               min(results["untraced"]["cpu"]), max(results["untraced"]["cpu"])))
        for i, seen in enumerate(runs):
            est = seen["est"]
            print("  %s run %d: attached %s after exec; budget %s; stages seen %s "
                  "(%d change(s)); estimated cost ratio max %s, last %s; daemon CPU %.2f s" % (
                      name, i + 1, "%.2f s" % seen["attach_s"] if seen["attach_s"] is not None
                      else "NOT (ran untraced)",
                      "%g" % seen["budget"] if seen["budget"] is not None else "-",
                      " -> ".join(seen["stages"]) or "-", max(len(seen["stages"]) - 1, 0),
                      "%.4f" % max(est) if est else "-", "%.4f" % est[-1] if est else "-",
                      seen["daemon_cpu"]))

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

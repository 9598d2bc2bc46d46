"""Contention profiles read by real consumers: a recorded lock workload exported as pprof and
read with Debian's `go tool pprof` (-raw for every sample, -top for the ranking), and as folded
stacks; every total must equal the report of the same recording exactly, and the hot line (the
waiters' `with lock:`) must be on top. Holds (--locks all --acquire-stacks) by the holder's line;
GIL waits of a GIL-bound program with the report's totals; --pprof-out on a live run and
on an attach."""
import os
import re
import shutil
import subprocess
import time

import harness

WORKLOAD = os.path.join(harness.PROGRAMS, "contention.py")


def line_of(path, text, occurrence=1):
    """1-based number of the line holding `text` (its n-th occurrence)."""
    seen = 0
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if text in line:
                seen += 1
                if seen == occurrence:
                    return n
    raise AssertionError("%r not in %s" % (text, path))


# contention.py: the holder's `with lock:` comes first, the waiters' second.
HOLD_LINE = line_of(WORKLOAD, "with lock:", 1)
WAIT_LINE = line_of(WORKLOAD, "with lock:", 2)


def go():
    path = shutil.which("go") or "/usr/lib/go/bin/go"
    if not os.access(path, os.X_OK):
        raise AssertionError("go is missing (tools/install-deps.sh installs golang-go)")
    return path


def pprof(*args):
    env = dict(os.environ, HOME=os.environ.get("HOME", "/tmp"), GOCACHE="/tmp/ts-gocache",
               PPROF_TMPDIR="/tmp")
    r = subprocess.run([go(), "tool", "pprof"] + list(args), capture_output=True, text=True,
                       timeout=120, env=env)
    if r.returncode != 0:
        raise AssertionError("go tool pprof %s: %s" % (" ".join(args), r.stderr))
    return r.stdout


def raw_totals(path, *filters):
    """Sample-type totals as `go tool pprof -raw` prints the samples (after pprof's own
    filters, e.g. -tagignore)."""
    out = pprof(*(list(filters) + ["-raw", path]))
    lines = out.splitlines()
    start = lines.index("Samples:")
    types = [t.split("/")[0] for t in lines[start + 1].replace("[dflt]", "").split()]
    totals = dict.fromkeys(types, 0)
    for line in lines[start + 2:]:
        if line and not line.startswith(" "):
            break  # Locations, Mappings
        m = re.match(r"^\s+(-?\d+(?:\s+-?\d+)*):", line)
        if not m:
            continue  # a sample's labels
        values = [int(v) for v in m.group(1).split()]
        if len(values) == len(types):
            for t, v in zip(types, values):
                totals[t] += v
    return totals, out


def top_rows(path, sample_index):
    """(flat, name) rows of `go tool pprof -top -lines`, most first."""
    out = pprof("-top", "-lines", "-nodecount=20", "-sample_index=" + sample_index, path)
    rows = []
    body = out.split("flat%", 1)[1].splitlines()[1:]
    for line in body:
        parts = line.split()
        if len(parts) >= 6:
            rows.append((parts[0], " ".join(parts[5:])))
    return rows, out


def folded_totals(path):
    totals = {}
    with open(path) as f:
        for line in f:
            stack, value = line.rstrip("\n").rsplit(" ", 1)
            root = stack.split(";", 1)[0]
            totals[root] = totals.get(root, 0) + int(value)
    return totals


def report_totals(report):
    t = {"contended": sum(l["contended"] for l in report["locks"]),
         "wait_ns": sum(l["wait_ns_total"] for l in report["locks"]),
         "lock_waits": sum(th["locks"]["lock_waits"] for th in report["threads"] if th.get("locks")),
         "lock_wait_ns": sum(th["locks"]["lock_wait_ns"] for th in report["threads"]
                             if th.get("locks")),
         "cond_ns": sum(th["locks"]["condition_wait_ns"] for th in report["threads"]
                        if th.get("locks")),
         "hold_ns": sum(l["hold_ns_total"] or 0 for l in report["locks"]),
         "releases_held": sum(l["hold_histogram"]["count"] for l in report["locks"]
                              if l.get("hold_histogram"))}
    gil = report["gil"]
    t["gil_acquisitions"] = gil.get("acquisitions", 0)
    t["gil_wait_ns"] = sum(p["wait_ns"] for p in gil.get("per_thread", []))
    return t


class PprofTest(harness.BpfTestCase):
    def record(self, argv, label, *flags, program=WORKLOAD, args=("0.002", "200")):
        rec, report = self.path(label + ".tsrec"), self.path(label + ".json")
        r = harness.run([harness.threadscope(), "record", "-o", rec, "--report", report] +
                        list(flags) + ["--"] + argv + [program] + list(args), timeout=180)
        self.assertEqual(r.returncode, 0, r.stderr)
        return rec, harness.load_json(report)

    def export(self, rec, out, *extra):
        # 2.7's recordings of gil.py hold millions of GIL records (its GIL is dropped every 100
        # ticks): their export took 20 s on a quiet machine and over 60 s on a loaded one.
        r = harness.run([harness.threadscope(), "export", rec, "-o", out] + list(extra),
                        timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r

    def test_lock_waits_by_stack_equal_the_report(self):
        def body(interp):
            label = interp.label
            rec, report = self.record(interp.argv, label)
            if report["target"]["lock_mode"] == "off":
                self.skipTest("%s: no lock tracing on this interpreter (lock mode off)" % label)
            self.assertTrue(report["locks"], "%s: no lock waits in the report" % label)
            want = report_totals(report)
            self.assertGreaterEqual(want["contended"], 300, label)
            self.assertEqual(want["contended"], want["lock_waits"])  # none still waiting
            self.assertEqual(want["wait_ns"], want["lock_wait_ns"])

            pb = self.path(label + ".pb.gz")
            r = self.export(rec, pb)
            self.assertIn("wrote pprof profile", r.stderr)
            with open(pb, "rb") as f:
                self.assertEqual(f.read(2), b"\x1f\x8b")  # gzipped, as pprof files are
            totals, raw = raw_totals(pb)
            self.assertEqual(totals["contentions"], want["contended"], raw[:3000])
            self.assertEqual(totals["delay"], want["lock_wait_ns"])
            self.assertEqual(totals["condition-delay"], want["cond_ns"])
            if report["gil"]["traced"]:
                self.assertEqual(totals["gil-waits"], want["gil_acquisitions"])
                self.assertEqual(totals["gil-delay"], want["gil_wait_ns"])
            self.assertIn("Comment: threadscope", raw)
            self.assertIn("pid %d" % report["target"]["pid"], raw)
            self.assertIn("thread_name:", raw)
            self.assertIn("wait_kind:[lock]", raw)
            if want["cond_ns"]:
                # contention.py waits on a Condition only inside Thread.start(), and on the
                # PyMutex path (3.13+) so short a wait may be won by spinning, never parked.
                self.assertIn("wait_kind:[condition]", raw)

            rows, top = top_rows(pb, "delay")
            self.assertTrue(rows, top)
            self.assertIn("contention.py:%d" % WAIT_LINE, rows[0][1], top)
            self.assertTrue(rows[0][1].startswith("worker "), top)
            rows, top = top_rows(pb, "contentions")
            self.assertIn("contention.py:%d" % WAIT_LINE, rows[0][1], top)

            folded = self.path(label + ".folded")
            r = self.export(rec, folded)
            self.assertIn("nanoseconds", r.stderr)
            f = folded_totals(folded)
            self.assertEqual(f["lock wait"], want["lock_wait_ns"])
            self.assertEqual(f.get("condition wait", 0), want["cond_ns"])
            self.assertEqual(f.get("GIL wait", 0), want["gil_wait_ns"])
            with open(folded) as fh:
                text = fh.read()
            self.assertRegex(text, r"(?m)^lock wait;.*;worker \(.*contention\.py:%d\) \d+$"
                             % WAIT_LINE)
        self.for_each_interpreter(body)

    def test_holds_by_the_acquiring_stack(self):
        rec, report = self.record([harness.DEBIAN_PYTHON], "all", "--locks", "all",
                                  "--acquire-stacks", "8", args=("0.005", "40"))
        want = report_totals(report)
        pb = self.path("all.pb.gz")
        self.export(rec, pb, "--format", "pprof")
        totals, raw = raw_totals(pb)
        self.assertEqual(totals["lock-release-hold"], want["hold_ns"], raw[:3000])
        self.assertEqual(totals["lock-release"], want["releases_held"])
        self.assertEqual(totals["delay"], want["lock_wait_ns"])
        rows, top = top_rows(pb, "lock-release-hold")
        # The holder sleeps HOLD seconds inside its `with lock:`: its take is the top hold.
        self.assertIn("contention.py:%d" % HOLD_LINE, rows[0][1], top)

        # Without acquire stacks the profile says how to get them.
        rec, report = self.record([harness.DEBIAN_PYTHON], "all0", "--locks", "all",
                                  args=("0.005", "10"))
        pb = self.path("all0.pb.gz")
        self.export(rec, pb)
        self.assertIn("--acquire-stacks", pprof("-raw", pb))

    def test_gil_waits_of_a_gil_bound_program(self):
        def body(interp):
            label = interp.label
            truth = self.path(label + "-gil.truth")
            rec, report = self.record(interp.argv, label + "-gil", program=os.path.join(
                harness.PROGRAMS, "gil.py"), args=(truth,))
            if not report["gil"]["traced"]:
                self.skipTest("%s: GIL not traced (%s)" % (label, report["gil"].get("reason")))
            want = report_totals(report)
            pb = self.path(label + "-gil.pb.gz")
            self.export(rec, pb)
            totals, raw = raw_totals(pb)
            self.assertEqual(totals["gil-waits"], want["gil_acquisitions"], label)
            self.assertEqual(totals["gil-delay"], want["gil_wait_ns"], label)
            self.assertIn("wait_kind:[gil]", raw)
            folded = self.path(label + "-gil.folded")
            self.export(rec, folded, "--format", "collapsed")
            self.assertEqual(folded_totals(folded)["GIL wait"], want["gil_wait_ns"])
        self.for_each_interpreter(body)

    def test_gil_waits_by_stack(self):
        # --gil-stacks: the spinning threads of gil.py wait for the GIL at spin()'s loop; that is
        # where the GIL delay is, by line.
        spin_def = line_of(os.path.join(harness.PROGRAMS, "gil.py"), "def spin():")

        def body(interp):
            label = interp.label
            truth = self.path(label + "-gs.truth")
            rec, report = self.record(interp.argv, label + "-gs", "--gil-stacks", "8",
                                      program=os.path.join(harness.PROGRAMS, "gil.py"),
                                      args=(truth,))
            stacks = report["target"]["python_stacks"]
            if not report["gil"]["traced"]:
                self.skipTest("%s: GIL not traced (%s)" % (label, report["gil"].get("reason")))
            if not stacks["enabled"]:
                # 2.7: GIL waits by thread only (test_gil_waits_of_a_gil_bound_program).
                self.skipTest("%s: no Python stacks (%s)" % (label, stacks.get("reason")))
            self.assertEqual(stacks["frames_gil"], 8)
            want = report_totals(report)
            pb = self.path(label + "-gs.pb.gz")
            self.export(rec, pb)
            totals, raw = raw_totals(pb)
            self.assertEqual(totals["gil-waits"], want["gil_acquisitions"], label)
            self.assertEqual(totals["gil-delay"], want["gil_wait_ns"], label)
            rows, top = top_rows(pb, "gil-delay")
            self.assertTrue(rows[0][1].startswith("spin "), top)
            line = int(re.search(r"gil\.py:(\d+)", rows[0][1]).group(1))
            self.assertTrue(spin_def < line <= spin_def + 4, top)
        self.for_each_interpreter(body)

    def test_pprof_out_on_run_and_attach_and_bad_input(self):
        pb, folded = self.path("run.pb.gz"), self.path("run.folded")
        report = self.path("run.json")
        r = harness.run([harness.threadscope(), "run", "--pprof-out", pb, "--collapsed-out",
                         folded, "--report", report, "--", harness.DEBIAN_PYTHON, WORKLOAD,
                         "0.005", "20"], timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        want = report_totals(harness.load_json(report))
        totals, _ = raw_totals(pb)
        self.assertEqual(totals["contentions"], want["contended"])
        self.assertEqual(totals["delay"], want["lock_wait_ns"])
        self.assertEqual(folded_totals(folded)["lock wait"], want["lock_wait_ns"])

        # attach: a process already running, its lock created before the probes (lock_kind
        # unknown); the profile still holds exactly the waits of the attached window.
        target = subprocess.Popen([harness.DEBIAN_PYTHON, WORKLOAD, "0.005", "2000"])
        try:
            time.sleep(0.5)  # threads started and contending before the attach
            pb, report = self.path("attach.pb.gz"), self.path("attach.json")
            r = harness.run([harness.threadscope(), "attach", str(target.pid), "--duration",
                             "1.5", "--no-live", "--pprof-out", pb, "--report", report],
                            timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            target.kill()
            target.wait()
        want = report_totals(harness.load_json(report))
        self.assertGreater(want["lock_waits"], 50)
        # A waiter is likely mid-wait when the window closes: the profile keeps it as "still
        # waiting" up to the end, the report's thread totals count finished waits only.
        totals, raw = raw_totals(pb, "-tagignore=outcome=still")
        self.assertEqual(totals["contentions"], want["lock_waits"], raw[:3000])
        self.assertEqual(totals["delay"], want["lock_wait_ns"])
        self.assertIn("lock_kind:[unknown]", raw)
        rows, top = top_rows(pb, "delay")
        self.assertIn("contention.py:%d" % WAIT_LINE, rows[0][1], top)

        r = harness.run([harness.threadscope(), "run", "--pprof-out", "/nonexistent/x.pb.gz",
                         "--", harness.DEBIAN_PYTHON, "-c", "pass"])
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--pprof-out", r.stderr)


if __name__ == "__main__":
    harness.main()

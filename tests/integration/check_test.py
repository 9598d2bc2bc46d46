"""`threadscope check`, the CI gate, end to end: a baseline from a workload, unchanged runs that
pass, an injected regression (the workload holds its lock longer) that fails with every CI
output saying so, and bad baselines, bad flags and commands without data getting their exit
codes."""
import json
import os
import xml.etree.ElementTree as ET

import harness

WORKLOAD = os.path.join(harness.PROGRAMS, "contention.py")


class CheckTest(harness.BpfTestCase):
    def check(self, *args, hold=None, interp=None, rounds=None):
        cmd = [harness.threadscope(), "check"] + list(args)
        if hold is not None:
            interp = interp or harness.debian_python()
            cmd += ["--"] + interp.argv + [WORKLOAD, str(hold)]
            if rounds is not None:
                cmd.append(str(rounds))
        return harness.run(cmd, timeout=300)

    def baseline(self, interp):
        path = self.path(interp.label + ".baseline.json")
        r = self.check("--baseline", path, "--runs", "3", "--update-baseline", hold=0,
                       interp=interp)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("wrote baseline", r.stdout)
        return path

    def test_unchanged_passes_and_injected_regression_fails(self):
        self.for_each_interpreter(self.gate, kinds=harness.CORE)

    def gate(self, interp):
        baseline = self.baseline(interp)
        b = harness.load_json(baseline)
        self.assertEqual(b["threadscope_baseline"], 1)
        self.assertIn("lock_contentions", b["figures"])
        if not interp.free_threaded():  # no GIL there
            # --gil waits (the default) counts no forced switches; waits it does.
            self.assertIn("gil_wait_share", b["figures"])

        out = {k: self.path("%s.ok.%s" % (interp.label, k)) for k in ("xml", "json", "md")}
        r = self.check("--baseline", baseline, "--runs", "3", "--junit", out["xml"],
                       "--json", out["json"], "--summary", out["md"], hold=0, interp=interp)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("verdict: ok", r.stdout)
        self.assertEqual(harness.load_json(out["json"])["verdict"], "ok")
        suite = ET.parse(out["xml"]).getroot().find("testsuite")
        self.assertEqual(suite.get("failures"), "0")

        # The regression: 50 ms holds make every waiter wait (60 contended acquisitions where
        # the baseline has none), at one line of the program.
        bad = {k: self.path("%s.bad.%s" % (interp.label, k)) for k in ("xml", "json", "md")}
        r = self.check("--baseline", baseline, "--runs", "3", "--junit", bad["xml"],
                       "--json", bad["json"], "--summary", bad["md"], "--github", hold=0.05,
                       interp=interp)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("verdict: REGRESSION", r.stdout)
        self.assertIn("::error title=threadscope%3A lock_contentions regressed::", r.stdout)
        result = harness.load_json(bad["json"])
        self.assertEqual(result["verdict"], "regression")
        figures = {f["name"]: f for f in result["figures"]}
        self.assertTrue(figures["lock_contentions"]["regressed"])
        self.assertGreaterEqual(figures["lock_contentions"]["median"], 50)
        sites = [f for n, f in figures.items() if n.startswith("lock_contentions@")]
        self.assertTrue(any("contention.py:" in f["name"] and f["median"] >= 50 for f in sites),
                        sites)
        suite = ET.parse(bad["xml"]).getroot().find("testsuite")
        failed = [tc.get("name") for tc in suite.findall("testcase")
                  if tc.find("failure") is not None]
        self.assertIn("lock_contentions", failed)
        with open(bad["md"]) as f:
            self.assertIn("**regressed**", f.read())

        # The same verdict from saved reports.
        report = self.path(interp.label + ".saved.json")
        r = harness.run([harness.threadscope(), "run", "--report", report, "--"] +
                        interp.argv + [WORKLOAD, "0.05"], timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.check("--baseline", baseline, "--reports", report)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)

    def test_stacks_whose_waiting_grew_are_named(self):
        # Per-stack figures from each run's profile: 2 ms holds in the baseline, 50 ms in the
        # regression; the waiters' stack is named in the verdict. (100 rounds: the process must
        # outlive the drain that resolves its stacks, docs/DESIGN.md section 9.)
        baseline = self.path("stacks.baseline.json")
        r = self.check("--baseline", baseline, "--runs", "2", "--stacks", "--update-baseline",
                       hold=0.002, rounds=100)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        figures = harness.load_json(baseline)["figures"]
        stacks = [n for n in figures if n.startswith("lock_wait_seconds@stack=worker (contention.py)")]
        self.assertTrue(stacks, sorted(figures))
        out = self.path("stacks.json")
        r = self.check("--baseline", baseline, "--runs", "2", "--stacks", "--json", out,
                       hold=0.05, rounds=20)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("waiting grew at (innermost frame first):\n  worker (contention.py)",
                      r.stdout)
        regressed = [f["name"] for f in harness.load_json(out)["figures"] if f["regressed"]]
        self.assertIn(stacks[0], regressed)

        # Two profiles compared directly.
        profiles = []
        for hold in ("0.002", "0.05"):
            pb = self.path("hold-%s.pb.gz" % hold)
            r = harness.run([harness.threadscope(), "run", "--pprof-out", pb, "--"] +
                            harness.debian_python().argv + [WORKLOAD, hold, "100"], timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            profiles.append(pb)
        r = self.check("--compare", profiles[0], profiles[1])
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("waiting grew at", r.stdout)
        self.assertIn("worker (contention.py)", r.stdout)
        r = self.check("--compare", profiles[1], profiles[1])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = self.check("--compare", profiles[0], self.path("missing.pb.gz"))
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)

    def test_bad_baselines_and_flags(self):
        corrupt = self.path("corrupt.json")
        with open(corrupt, "w") as f:
            f.write('{"threadscope_baseline": 1, "figures": {"lock_contentions": ')
        r = self.check("--baseline", corrupt, "--runs", "1", hold=0)
        self.assertEqual(r.returncode, 2)
        self.assertIn("is corrupt", r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)

        r = self.check("--baseline", self.path("missing.json"), "--runs", "1", hold=0)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--update-baseline", r.stderr)

        r = self.check("--baseline", corrupt, "--threshold", "lock_contentions=lots", hold=0)
        self.assertEqual(r.returncode, 2)
        self.assertIn("NAME=REL,ABS", r.stderr)

        r = self.check("--baseline", corrupt)
        self.assertEqual(r.returncode, 2)
        self.assertIn("give the command to run", r.stderr)

    def test_no_data(self):
        baseline = self.path("b.json")
        with open(baseline, "w") as f:
            json.dump({"threadscope_baseline": 1, "figures": {"lock_contentions": {"value": 3}}},
                      f)
        # Not a Python program: no run produces a report.
        r = harness.run([harness.threadscope(), "check", "--baseline", baseline, "--runs", "2",
                         "--", "/bin/true"], timeout=60)
        self.assertEqual(r.returncode, 4, r.stdout + r.stderr)
        self.assertIn("no data", r.stderr)

        # Lock and GIL tracing off: reports without the figures the baseline has.
        def body(interp):
            r = harness.run([harness.threadscope(), "check", "--baseline", baseline, "--runs",
                             "1", "--locks", "off", "--gil", "off", "--"] + interp.argv +
                            ["-c", "pass"], timeout=60)
            self.assertEqual(r.returncode, 4, r.stdout + r.stderr)
            self.assertIn("MISSING", r.stdout)
        self.for_each_interpreter(body, kinds=harness.CORE)


if __name__ == "__main__":
    harness.main()

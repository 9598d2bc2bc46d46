"""GIL tracing on every interpreter: tests/programs/gil.py runs CPU-bound threads at two switch
intervals and then sleepers, and writes down which threads did what; the report must agree with
it and with CPython's own rules (one holder at a time, about one forced switch per interval when
the GIL is always wanted), and a recording must replay to the same report."""
import json
import os
import subprocess

import harness


def version_of(python):
    out = subprocess.check_output([python, "-c", "import sys; print(sys.version_info[:2])"],
                                  text=True)
    return tuple(int(x) for x in out.strip("()\n").split(","))


class GilTest(harness.BpfTestCase):
    def trace(self, label, python):
        truth_path = self.path(label + ".gil.truth")
        report_path = self.path(label + ".gil.json")
        rec_path = self.path(label + ".gil.tsrec")
        r = harness.run([harness.threadscope(), "record", "-o", rec_path, "--report", report_path,
                         "--", python, os.path.join(harness.PROGRAMS, "gil.py"), truth_path],
                        timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        report = harness.load_json(report_path)
        replay = harness.run([harness.threadscope(), "report", rec_path, "-o", "json"])
        self.assertEqual(replay.returncode, 0, replay.stderr)
        self.assertEqual(json.loads(replay.stdout), report, "record -> report differs from live")
        return harness.load_json(truth_path), report

    def check(self, label, python):
        if version_of(python) < (3, 0):
            report = self.run_27(label, python)
            self.assertFalse(report["gil"]["traced"])
            self.assertIn("2.7", report["gil"]["reason"])
            return
        truth, report = self.trace(label, python)
        self.assertEqual(report["stats"]["drops"], 0)
        gil = report["gil"]
        self.assertTrue(gil["traced"], gil["reason"])
        for probe in report["probes"]:
            if probe["name"].startswith("gil_"):
                self.assertTrue(probe["attached"], "%s: %s" % (probe["name"], probe["reason"]))
        self.assertTrue(gil["coverage"]["forced_known"], gil["coverage"])
        # One holder at a time: no take returned while another thread held it, every drop came
        # from the thread holding it, and the holds add up to no more than the wall clock.
        self.assertEqual(gil["overlaps"], 0)
        self.assertEqual(gil["unmatched_drops"], 0)
        wall = report["trace"]["end_ns"] - report["trace"]["start_ns"]
        self.assertLessEqual(sum(t["hold_ns"] for t in gil["per_thread"]), wall + 1000000)
        per = {t["native_tid"]: t for t in gil["per_thread"]}
        phases = truth["phases"]
        for name, phase in phases.items():
            for tid in phase["tids"]:
                self.assertIn(tid, per, "%s thread %d has no GIL record" % (name, tid))

        def forced_per_second(name):
            phase = phases[name]
            return sum(per[t]["forced_drops"] for t in phase["tids"]) / phase["wall"]

        # Spinning threads always want the GIL: a waiter asks after one interval and the holder
        # drops it, so forced switches come about once per interval (fewer under load: the
        # waiter must be scheduled to ask). Holds fill the phase.
        for name in ("cpu5", "cpu1"):
            phase = phases[name]
            expected = 1.0 / phase["interval"]
            rate = forced_per_second(name)
            self.assertGreater(rate, 0.3 * expected, name)
            self.assertLess(rate, 1.5 * expected + 10, name)
            held = sum(per[t]["hold_ns"] for t in phase["tids"]) / 1e9
            self.assertGreater(held, 0.5 * phase["wall"], name)
            self.assertLessEqual(held, phase["wall"] + 0.01, name)
        self.assertGreater(forced_per_second("cpu1"), 2 * forced_per_second("cpu5"))
        # Sleepers: each sleep drops and re-takes it, voluntarily, and hardly waits.
        for tid in phases["sleepers"]["tids"]:
            t = per[tid]
            self.assertGreaterEqual(t["acquisitions"], 100)
            self.assertGreaterEqual(t["voluntary_drops"], 100)
            self.assertEqual(t["forced_drops"], 0)
            self.assertLess(t["wait_share"], 0.25, t)

    def run_27(self, label, python):
        report_path = self.path(label + ".gil.json")
        r = harness.run([harness.threadscope(), "run", "--report", report_path, "--", python,
                         "-c", "pass"], timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        return harness.load_json(report_path)

    def test_every_interpreter(self):
        self.for_each_interpreter(self.check)

    def test_gil_off(self):
        report_path = self.path("off.json")
        r = harness.run([harness.threadscope(), "run", "--gil", "off", "--report", report_path,
                         "--", harness.DEBIAN_PYTHON, "-c", "pass"], timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        report = harness.load_json(report_path)
        self.assertFalse(report["gil"]["traced"])
        self.assertIn("--gil off", report["gil"]["reason"])
        self.assertFalse([p for p in report["probes"] if p["name"].startswith("gil_")])

    def test_gil_events_stream(self):
        events_path = self.path("events.jsonl")
        truth_path = self.path("events.truth")
        r = harness.run([harness.threadscope(), "run", "--gil-events", "--events", events_path,
                         "--", harness.DEBIAN_PYTHON, os.path.join(harness.PROGRAMS, "gil.py"),
                         truth_path], timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(events_path) as f:
            events = [json.loads(line) for line in f if line.strip()]
        gil = [e for e in events if e["type"] == "gil"]
        sleepers = set(harness.load_json(truth_path)["phases"]["sleepers"]["tids"])
        acquired = [e for e in gil if e["change"] == "acquired" and e["native_tid"] in sleepers]
        self.assertGreaterEqual(len(acquired), 400)
        forced = [e for e in gil if e["change"] == "dropped" and e["forced"]]
        self.assertTrue(forced)


if __name__ == "__main__":
    harness.main()

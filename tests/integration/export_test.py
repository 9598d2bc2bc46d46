"""Timelines: a recording of a program with real lock hand-offs and GIL switches, exported as
Perfetto TrackEvent protobuf and as Chrome JSON, parsed back (Perfetto with protoc and the
trace.proto subset) and checked against the report of the same recording: every thread has its
track, every contended wait its slice, every hand-off its flow, every GIL hold its slice."""
import json
import os
import re
import subprocess

import harness

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "..", "..", "proto")


def decode_perfetto(path):
    """The trace as protobuf text, through protoc and the trace.proto subset."""
    with open(path, "rb") as f:
        return subprocess.run(["protoc", "--proto_path", PROTO_DIR,
                               "--decode=perfetto.protos.Trace", "perfetto/trace.proto"],
                              stdin=f, capture_output=True, text=True)


class ExportTest(harness.BpfTestCase):
    def record(self, interp):
        rec, report = self.path(interp.label + ".tsrec"), self.path(interp.label + ".json")
        # --gil full: the timeline's GIL holds need every take and drop (the default traces
        # only the takes that wait).
        r = harness.run([harness.threadscope(), "record", "-o", rec, "--report", report,
                         "--gil", "full", "--"] +
                        interp.argv + [os.path.join(harness.PROGRAMS, "contention.py"),
                                       "0.002", "300"], timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        return rec, harness.load_json(report)

    def test_chrome_and_perfetto_match_the_report(self):
        self.for_each_interpreter(self.check_timelines, kinds=harness.CORE)

    def check_timelines(self, interp):
        rec, report = self.record(interp)
        contended = sum(l["contended"] for l in report["locks"])
        # 3 waiters x 300 rounds, give or take; with GIL events, far more than the live
        # stream's queue holds (8192), which the replay must not truncate. (A free-threaded
        # build has no GIL: no GIL events, holds or counters.)
        gil = not report["target"]["free_threaded"]
        self.assertGreaterEqual(contended, 600)
        if gil:
            self.assertGreater(3 * report["gil"]["acquisitions"], 8192)
        tids = {t["native_tid"] for t in report["threads"] if t["native_tid"]}

        chrome = self.path(interp.label + ".json.trace")
        r = harness.run([harness.threadscope(), "export", rec, "-o", chrome, "--format",
                         "chrome"])
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(chrome) as f:
            events = json.load(f)["traceEvents"]
        named = {e["tid"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
        self.assertTrue(tids <= named, (tids, named))
        waits = [e for e in events if e["ph"] == "X" and e["name"].startswith("lock wait")]
        self.assertEqual(len(waits), contended)
        self.assertTrue(all("contention.py:" in e["name"] for e in waits), waits[:3])
        starts = [e for e in events if e["ph"] == "s"]
        finishes = [e for e in events if e["ph"] == "f"]
        self.assertGreater(len(starts), 0)
        self.assertEqual({e["id"] for e in finishes} - {e["id"] for e in starts}, set())
        gil_held = [e for e in events if e["ph"] == "b" and e["name"] == "GIL held"]
        # Every acquisition's hold is drawn (the one open at the end included); only a hold
        # that began before the attach has no start.
        if gil:
            self.assertGreaterEqual(len(gil_held), report["gil"]["acquisitions"] - 1)

        perfetto = self.path(interp.label + ".pftrace")
        r = harness.run([harness.threadscope(), "export", rec, "-o", perfetto])
        self.assertEqual(r.returncode, 0, r.stderr)
        decoded = decode_perfetto(perfetto)
        self.assertEqual(decoded.returncode, 0, decoded.stderr)
        text = decoded.stdout
        self.assertEqual(text.count("type: TYPE_SLICE_BEGIN"), text.count("type: TYPE_SLICE_END"))
        self.assertGreaterEqual(text.count('name: "lock wait at contention.py:'), contended)
        traced_tids = {int(t) for t in re.findall(r"\btid: (\d+)", text)}
        self.assertTrue(tids <= traced_tids, (tids, traced_tids))
        self.assertEqual(sorted(re.findall(r"\bflow_ids: (\d+)", text)),
                         sorted(re.findall(r"terminating_flow_ids: (\d+)", text)))
        if gil:
            self.assertIn('name: "GIL held"', text)
        self.assertIn("counter_value:", text)

    def test_perfetto_out_on_run_and_bad_input(self):
        # 20 rounds: long enough that the process is still there when its stacks are resolved
        # (a process that ends within one drain interval leaves "?" frames, docs/DESIGN.md).
        def body(interp):
            out = self.path(interp.label + ".run.pftrace")
            r = harness.run([harness.threadscope(), "run", "--perfetto-out", out, "--"] +
                            interp.argv + [os.path.join(harness.PROGRAMS, "contention.py"),
                                           "0.005", "20"], timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            decoded = decode_perfetto(out)
            self.assertEqual(decoded.returncode, 0, decoded.stderr)
            self.assertIn("lock wait at contention.py:", decoded.stdout)
        self.for_each_interpreter(body, kinds=harness.CORE)

        bogus = self.path("bogus.tsrec")
        with open(bogus, "w") as f:
            f.write("not a recording\n")
        r = harness.run([harness.threadscope(), "export", bogus, "-o", self.path("x.pftrace")])
        self.assertEqual(r.returncode, 8, r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertFalse(os.path.exists(self.path("x.pftrace")))


if __name__ == "__main__":
    harness.main()

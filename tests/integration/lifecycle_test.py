"""threadscope run, on every interpreter: the report matches what the program says it did."""
import os
import subprocess

import harness


def expected_joined(kind, visibility):
    """What `joined` must be for a thread of this kind, given what the interpreter can show."""
    if kind == "failed":
        return False  # never ran, so never joined, whatever the interpreter
    if visibility == "none":
        return None
    exact = visibility == "exact"
    return {
        "joined_running": True,
        "joined_done": True if exact else None,
        "never_joined": False if exact else None,
        "left_running": False if exact else None,
        "raw": False,
        "failed": False,
    }[kind]


# What a report's probes[].feeds says a probe gives thread tracing (docs/PROBES.md).
THREAD_CAPABILITIES = {"lifecycle", "thread_names", "bootstrap", "body_done", "joins", "detach"}


class LifecycleTest(harness.BpfTestCase):
    def check(self, interp):
        label = interp.label
        truth_path, report_path = self.path(label + ".truth"), self.path(label + ".json")
        program = os.path.join(harness.PROGRAMS, "lifecycle.py")
        # `run` follows the command's execs to the interpreter (through tools/in-root for the
        # Debian unstable root: wrapper -> unshare -> wrapper -> python).
        r = harness.run([harness.threadscope(), "run", "--report", report_path, "--"] +
                        interp.argv + [program, truth_path], timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        truth, report = harness.load_json(truth_path), harness.load_json(report_path)

        self.assertEqual(report["target"]["pid"], truth["pid"])
        self.assertEqual(report["target"]["python_version"], truth["python"])
        self.assertEqual(report["trace"]["ended_by"], "exited")
        self.assertEqual(report["stats"]["drops"], 0)
        version = tuple(int(x) for x in truth["python"].split(".")[:2])
        # (A subtest of its own: a missing probe fails it, and the ground truth below is still
        # checked and reported.)
        with self.subTest(interpreter=label, check="probes"):
            thread_probes = [p for p in report["probes"]
                             if THREAD_CAPABILITIES & set(p["feeds"])]
            self.assertTrue(thread_probes)
            for probe in thread_probes:
                # Every probe that feeds what threads show attaches (3.4-3.12: the semaphore
                # waits joins use too), but 2.7's join, which has no C-level signal: absent by
                # design, with a reason. Lock and GIL probes are locks_test's and gil_test's
                # (3.15 has no semaphore waits; a free-threaded build has no GIL).
                if version < (3, 0) and probe["name"] == "thread_join":
                    continue
                self.assertTrue(probe["attached"], "%s: %s" % (probe["name"], probe["reason"]))
        visibility = report["target"]["join_visibility"]
        self.assertEqual(visibility, "none" if version < (3, 0)
                         else "exact" if version >= (3, 13) else "blocking-only")

        started = [t for t in report["threads"] if t["origin"] == "started"]
        main = [t for t in report["threads"] if t["origin"] == "preexisting"]
        self.assertEqual(len(main), 1)
        self.assertEqual(main[0]["native_tid"], truth["pid"])
        self.assertEqual(main[0]["observed_from_start"], False)
        self.assertEqual([t for t in report["threads"] if t["origin"] == "native"], [])

        # Threads appear in the order they were started, as the program noted them.
        self.assertEqual(len(started), len(truth["threads"]),
                         "started %d threads, threadscope saw %d" %
                         (len(truth["threads"]), len(started)))
        counts = {}
        for want, got in zip(truth["threads"], started):
            kind = want["kind"]
            counts[kind] = counts.get(kind, 0) + 1
            where = "%s #%d" % (kind, counts[kind])
            self.assertEqual(got["parent_native_tid"], truth["pid"], where)
            self.assertEqual(got["state"], "DONE", where)
            self.assertTrue(got["observed_from_start"], where)
            self.assertEqual(got["joined"], expected_joined(kind, visibility), where)
            if kind == "failed":
                self.assertTrue(got["start_failed"], where)
                self.assertIsNone(got["ident"], where)
                self.assertIsNone(got["native_tid"], where)
                self.assertIsNone(got["running_ns"], where)
                self.assertEqual(got["returned"], False, where)
                continue
            self.assertFalse(got["start_failed"], where)
            self.assertEqual(got["ident"], want["ident"], where)
            if want["native_id"] is not None:
                self.assertEqual(got["native_tid"], want["native_id"], where)
            self.assertEqual(got["returned"], kind != "left_running", where)
            self.assertTrue(got["started_ns"] <= got["running_ns"] <= got["done_ns"], where)
            self.assertIsNotNone(got["exited_ns"], where)

        summary = report["summary"]
        self.assertEqual(summary["start_failed"], counts["failed"])
        # Only threads that ran count: a failed start has no callable that could return.
        self.assertEqual(summary["did_not_return"], counts["left_running"])
        if visibility != "none":
            self.assertEqual(summary["joined"], counts["joined_running"] +
                             (counts["joined_done"] if visibility == "exact" else 0))

    def test_every_interpreter(self):
        self.for_each_interpreter(self.check)


if __name__ == "__main__":
    harness.main()

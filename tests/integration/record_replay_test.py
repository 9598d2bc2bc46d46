"""record -> report rebuilds exactly the report the live trace produced: threads, and locks with
their Python stacks (the recording carries the locations the live engine resolved)."""
import json
import os

import harness


class RecordReplayTest(harness.BpfTestCase):
    def check(self, interp, program="lifecycle.py", flags=(), suffix=""):
        label = interp.label + suffix
        rec, live = self.path(label + ".tsrec"), self.path(label + ".live.json")
        r = harness.run([harness.threadscope(), "record", "-o", rec, "--report", live] +
                        list(flags) + ["--"] + interp.argv +
                        [os.path.join(harness.PROGRAMS, program), self.path(label + ".truth")],
                        timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        replay = harness.run([harness.threadscope(), "report", rec, "-o", "json"])
        self.assertEqual(replay.returncode, 0, replay.stderr)
        replayed = json.loads(replay.stdout)
        self.assertEqual(replayed, harness.load_json(live))
        # The text form renders from the same snapshot.
        text = harness.run([harness.threadscope(), "report", rec])
        self.assertEqual(text.returncode, 0, text.stderr)
        self.assertIn("Summary:", text.stdout)
        return replayed

    def test_every_interpreter(self):
        self.for_each_interpreter(self.check)

    def test_locks_and_stacks(self):
        def body(interp):
            report = self.check(interp, "locks.py", ["--locks", "all", "--acquire-stacks", "4"],
                                suffix=".locks")
            self.assertTrue(report["target"]["python_stacks"]["enabled"],
                            report["target"]["python_stacks"]["reason"])
            where = [l["first_contended_at"]["where"] for l in report["locks"]
                     if l["first_contended_at"]]
            self.assertTrue(where and all("locks.py:" in w for w in where), where)
        # The stack layouts: Debian 12's (DWARF-less, built-in offsets), pyenv 3.13's
        # debug_offsets, and the debug_offsets of every Debian unstable build and extra.
        self.for_each_interpreter(body, only=lambda i: i.label in ("debian-3.11", "pyenv-3.13.0")
                                  or i.kind in ("debian-unstable", "extra"))


if __name__ == "__main__":
    harness.main()

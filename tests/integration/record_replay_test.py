"""record -> report rebuilds exactly the report the live trace produced."""
import os

import harness


class RecordReplayTest(harness.BpfTestCase):
    def check(self, label, python):
        rec, live = self.path(label + ".tsrec"), self.path(label + ".live.json")
        r = harness.run([harness.threadscope(), "record", "-o", rec, "--report", live, "--",
                         python, os.path.join(harness.PROGRAMS, "lifecycle.py"),
                         self.path(label + ".truth")], timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        replay = harness.run([harness.threadscope(), "report", rec, "-o", "json"])
        self.assertEqual(replay.returncode, 0, replay.stderr)
        import json
        self.assertEqual(json.loads(replay.stdout), harness.load_json(live))
        # The text form renders from the same snapshot.
        text = harness.run([harness.threadscope(), "report", rec])
        self.assertEqual(text.returncode, 0, text.stderr)
        self.assertIn("Summary:", text.stdout)

    def test_every_interpreter(self):
        self.for_each_interpreter(self.check)


if __name__ == "__main__":
    harness.main()

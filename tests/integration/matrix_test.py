"""The interpreter matrix's plumbing: tools/in-root runs a root's interpreter under the pid the
caller started (only execs on the way), in the caller's directory, with the host's test paths
at the same place inside, and leaves no mount behind on the host; every required interpreter of
tests/interpreters.json is here."""
import os
import subprocess

import harness

PROBE = '''import json, os, sys
json.dump({"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(),
           "executable": sys.executable, "version": sys.version.split()[0]},
          open(sys.argv[1], "w"))
'''


class MatrixTest(harness.BpfTestCase):
    def test_required_interpreters_are_here(self):
        for interp in harness.interpreters():
            if interp.required:
                with self.subTest(interpreter=interp.label):
                    self.assertTrue(interp.present, interp.missing)

    def test_in_root_keeps_the_pid_the_paths_and_the_files(self):
        def body(interp):
            out = self.path(interp.label + ".probe.json")
            p = subprocess.Popen(interp.argv + ["-c", PROBE, out], cwd=self.tmp.name)
            self.assertEqual(p.wait(timeout=60), 0)
            seen = harness.load_json(out)  # written inside the root, read on the host
            self.assertEqual(seen["pid"], p.pid)  # wrapper -> unshare -> wrapper -> python
            self.assertEqual(seen["ppid"], os.getpid())
            self.assertEqual(seen["cwd"], os.path.realpath(self.tmp.name))
            self.assertEqual(seen["executable"], interp.path)
            self.assertEqual(seen["version"], interp.reported_version())
            self.assertTrue(seen["version"].startswith(interp.version + "."), seen)
            # The binds lived in the wrapper's own mount namespace only.
            with open("/proc/self/mounts") as f:
                leaked = [l for l in f if " %s/" % interp.root in l]
            self.assertEqual(leaked, [])
        self.for_each_interpreter(body, kinds=("debian-unstable",))


if __name__ == "__main__":
    harness.main()

"""Bad input: one clear line on stderr, a distinct exit code, nothing left attached."""
import json
import os
import shutil
import signal
import stat
import subprocess
import time

import harness

NOBODY = 65534


class BadInputTest(harness.BpfTestCase):
    def one_line_error(self, r, code, *fragments):
        self.assertEqual(r.returncode, code, "stdout=%r stderr=%r" % (r.stdout, r.stderr))
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertTrue(lines[0].startswith("threadscope: "), lines[0])
        for f in fragments:
            self.assertIn(f, lines[0])

    def ts(self, *args, **kwargs):
        return harness.run([harness.threadscope()] + list(args), **kwargs)

    def test_no_such_process(self):
        self.one_line_error(self.ts("attach", "999999"), 3, "no process with pid 999999")

    def test_not_cpython(self):  # a live process that is not Python
        p = subprocess.Popen(["sleep", "30"])
        try:
            self.one_line_error(self.ts("attach", str(p.pid)), 4, "is not CPython", "sleep")
        finally:
            p.kill()
            p.wait()

    def test_run_command_that_is_not_python(self):
        self.one_line_error(self.ts("run", "--", "/bin/true"), 4,
                            "without starting a CPython interpreter")

    def test_run_missing_command(self):
        self.one_line_error(self.ts("run", "--", "/nonexistent/python"), 127, "cannot run")

    def test_usage_errors(self):
        self.one_line_error(self.ts("attach", "--duration", "abc", "1"), 2, "--duration")
        self.one_line_error(self.ts("attach", "notapid"), 2)
        self.one_line_error(self.ts("attach", "-7"), 2)
        self.one_line_error(self.ts("frobnicate"), 2)
        self.one_line_error(self.ts("run"), 2, "no command")
        self.one_line_error(self.ts("attach", "--ring-buffer", "12x", "1"), 2, "--ring-buffer")
        self.one_line_error(self.ts("attach", "--locks", "bogus", "1"), 2, "--locks", "bogus",
                            "contended, all, off")
        self.one_line_error(self.ts("run", "--lock-threshold", "soon", "--", "true"), 2,
                            "--lock-threshold")
        self.one_line_error(self.ts("run", "--lock-stacks", "9", "--", "true"), 2,
                            "--lock-stacks", "0-8")
        self.one_line_error(self.ts("run", "--acquire-stacks", "-1", "--", "true"), 2,
                            "--acquire-stacks")
        # Unwritable outputs are refused before anything is traced.
        self.one_line_error(self.ts("run", "--perfetto-out", "/nonexistent/t.pftrace", "--",
                                    "true"), 2, "--perfetto-out", "/nonexistent/t.pftrace")
        self.one_line_error(self.ts("run", "--report", "/nonexistent/r.json", "--", "true"), 2,
                            "--report")
        self.one_line_error(self.ts("export", self.path("none.tsrec"), "-o", "/nonexistent/x"),
                            2, "export -o")
        self.one_line_error(self.ts("run", "--gil", "maybe", "--", "true"), 2, "--gil")

    def test_no_daemon_listening(self):
        self.one_line_error(self.ts("--server", "unix:" + self.path("nope.sock"), "status"), 6,
                            "no threadscoped is listening")

    def test_bad_recordings(self):
        self.one_line_error(self.ts("report", self.path("missing.tsrec")), 8, "cannot open")
        junk = self.path("junk.tsrec")
        with open(junk, "w") as f:
            f.write("#!/bin/sh\necho not a recording\n")
        self.one_line_error(self.ts("report", junk), 8, "not a threadscope recording")
        def body(interp):
            rec = self.path(interp.label + ".good.tsrec")
            r = self.ts(*(["record", "-o", rec, "--"] + interp.argv + ["-c", "pass"]))
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(rec, "rb") as f:
                data = f.read()
            cut = self.path(interp.label + ".cut.tsrec")
            with open(cut, "wb") as f:
                f.write(data[:len(data) - 5])
            self.one_line_error(self.ts("report", cut), 8, "truncated or corrupt")
        self.for_each_interpreter(body, kinds=harness.CORE)

    def test_no_permission_for_bpf(self):
        # An unprivileged user, tracing its own process in-process: BPF refuses, clearly. (On
        # the host's python3.11 only: what is tested is the CLI's refusal, not the interpreter.)
        tmp = self.path("bin")
        os.mkdir(tmp)
        os.chmod(self.tmp.name, 0o755)
        os.chmod(tmp, 0o755)
        cli = os.path.join(tmp, "threadscope")
        shutil.copy(harness.threadscope(), cli)
        os.chmod(cli, 0o755)
        as_nobody = dict(preexec_fn=lambda: (os.setgid(NOBODY), os.setuid(NOBODY)))
        with harness.sleeping_python(**as_nobody) as target:
            r = subprocess.run([cli, "attach", str(target.pid)], capture_output=True, text=True,
                               timeout=60, **as_nobody)
            self.one_line_error(r, 5, "needs root", "CAP_BPF")

    def test_target_exiting_during_attach(self):
        # Whatever the race gives, the CLI says what happened and exits with one of the codes
        # for it; it never hangs and never leaves probes behind.
        def body(interp):
            outcomes = set()
            for delay in [0.0, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8]:
                # Started once the process is the interpreter (tools/in-root first runs
                # the wrapper under the same pid).
                target = interp.popen(["-c", "import time; time.sleep(%f)" % delay])
                exit_json = self.path(interp.label + ".exit.json")
                r = self.ts("attach", str(target.pid), "--no-live", "--duration", "5",
                            "--report", exit_json, timeout=30)
                target.wait()
                outcomes.add(r.returncode)
                self.assertIn(r.returncode, (0, 3, 4, 7), r.stderr)
                if r.returncode == 0:
                    self.assertEqual(harness.load_json(exit_json)["trace"]["ended_by"], "exited")
                else:
                    lines = [l for l in r.stderr.splitlines() if l.strip()]
                    self.assertEqual(len(lines), 1, r.stderr)
            self.assertIn(0, outcomes)  # the slow exits were traced to the end
        self.for_each_interpreter(body, kinds=harness.CORE)

    def test_a_full_ring_is_counted_and_reported(self):
        # A starved consumer (the CLI, which hosts the engine, is stopped) and a burst of thread
        # starts: the 64 KiB ring overflows. The loss must be counted in the kernel, reported in
        # the stats and the summary, and streamed as a lost-events record.
        def body(interp):
            go = self.path(interp.label + ".go")
            burst = ("import os, threading, time\n"
                     "while not os.path.exists(%r): time.sleep(0.01)\n"
                     "for _ in range(3000):\n"
                     "    t = threading.Thread(target=len, args=('',)); t.start(); t.join()\n"
                     "open(%r, 'w').close()\n"
                     "time.sleep(30)\n") % (go, go + ".done")
            target = interp.popen(["-c", burst])
            report = self.path(interp.label + ".small.json")
            events = self.path(interp.label + ".small.jsonl")
            cli = None
            try:
                time.sleep(0.3)
                cli = harness.start_attach(target.pid, "--ring-buffer", "64K", "--report",
                                           report, "--events", events, stdout=subprocess.PIPE)
                cli.send_signal(signal.SIGSTOP)
                open(go, "w").close()
                harness.wait_for(lambda: os.path.exists(go + ".done"), timeout=60,
                                 what="the burst")
                cli.send_signal(signal.SIGCONT)
                time.sleep(0.5)
                cli.send_signal(signal.SIGINT)
                out, err = cli.communicate(timeout=30)
                self.assertEqual(cli.returncode, 0, err)
            finally:
                target.kill()
                target.wait()
                # Failed while stopped: do not leave it holding probes.
                if cli is not None and cli.poll() is None:
                    cli.send_signal(signal.SIGCONT)
                    cli.kill()
                    cli.wait()
            rep = harness.load_json(report)
            self.assertGreater(rep["stats"]["lost_ringbuf"], 0)
            self.assertEqual(rep["stats"]["drops"], rep["stats"]["lost_ringbuf"])
            self.assertIn("records were dropped", out + err)
            lines = [json.loads(l) for l in open(events) if l.strip()]
            streamed = sum(l["count"] for l in lines
                           if l["type"] == "lost" and l["source"] == "kernel_ring")
            self.assertEqual(streamed, rep["stats"]["lost_ringbuf"])
        self.for_each_interpreter(body, kinds=harness.CORE)

    def test_killed_cli_leaves_nothing_attached(self):
        def body(interp):
            with harness.sleeping_python(interp=interp) as target:
                cli = harness.start_attach(target.pid)
                self.assertNotEqual(harness.leftover_programs(), [])
                cli.kill()  # SIGKILL: no chance to detach; the kernel closes the link fds
                cli.wait()
                harness.wait_for(lambda: not harness.leftover_programs(),
                                 what="probes to go away")
        self.for_each_interpreter(body, kinds=harness.CORE)

    def test_sigterm_detaches_and_reports(self):
        def body(interp):
            with harness.sleeping_python(interp=interp) as target:
                report = self.path(interp.label + ".term.json")
                cli = harness.start_attach(target.pid, "--report", report)
                cli.send_signal(signal.SIGTERM)
                self.assertEqual(cli.wait(timeout=30), 0)
                self.assertEqual(harness.load_json(report)["trace"]["ended_by"], "detached")
        self.for_each_interpreter(body, kinds=harness.CORE)


if __name__ == "__main__":
    harness.main()

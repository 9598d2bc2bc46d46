"""threadscoped end to end: a real daemon on a real Unix socket, the CLI and other gRPC clients
talking to it, unprivileged users, vanished clients and shutdown."""
import grp
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time

import harness

API_CLIENT = sys.argv.pop(1) if len(sys.argv) > 1 else None
RAW_CLIENT = sys.argv.pop(1) if len(sys.argv) > 1 else None


class DaemonTest(harness.BpfTestCase):
    def setUp(self):
        super().setUp()
        self.daemon = harness.Daemon(self.tmp.name).__enter__()
        self.sock = self.daemon.sock

    def tearDown(self):
        self.daemon.stop()
        super().tearDown()

    def cli(self, *args, **kwargs):
        return self.daemon.cli(*args, **kwargs)

    def nobody_cli(self):
        """A copy of the CLI an unprivileged user can execute."""
        d = self.path("bin")
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o777)
        cli = os.path.join(d, "threadscope")
        shutil.copy(harness.threadscope(), cli)
        os.chmod(cli, 0o755)
        return cli

    as_nobody = staticmethod(harness.as_nobody)

    def test_socket_is_owner_and_group_only(self):
        st = os.stat(self.sock)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660)
        self.assertEqual(st.st_gid, grp.getgrnam("nogroup").gr_gid)

    def test_status_and_run_through_the_daemon(self):
        r = self.cli("status")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("daemon", r.stdout)
        report = self.path("run.json")
        r = self.cli("run", "--report", report, "--", harness.DEBIAN_PYTHON,
                     os.path.join(harness.PROGRAMS, "lifecycle.py"), self.path("truth.json"),
                     timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("via threadscoped at unix:" + self.sock, r.stderr)
        rep, truth = harness.load_json(report), harness.load_json(self.path("truth.json"))
        self.assertEqual(rep["summary"]["started"], len(truth["threads"]))
        self.assertEqual(rep["trace"]["ended_by"], "exited")
        # The target is gone from the daemon once the CLI detached.
        self.assertIn("no targets attached", self.cli("status").stdout)

    def test_overhead_budget_uses_costs_measured_at_start_up(self):
        """The daemon measured its per-hit probe costs when it started (log and the budget's
        calibration say so, with sane figures), and a quiet program's estimate, from probe hits
        counted in BPF, stays well under a 1% budget."""
        log = self.daemon.read_log()
        self.assertIn("overhead budget: probe costs measured at start-up", log)
        report = self.path("budget.json")
        r = self.cli("run", "--overhead-budget", "1%", "--report", report, "--",
                     harness.DEBIAN_PYTHON, "-c", "import time; time.sleep(4.5)", timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        budget = harness.load_json(report)["budget"]
        cal = budget["calibration"]
        self.assertTrue(cal.startswith("measured at start-up:"), budget)
        figures = dict(re.findall(r"(emulated uprobe|single-stepped uprobe|uretprobe|"
                                  r"raw tracepoint \(a syscall through sys_enter\)) (\d+) ns",
                                  cal))
        self.assertEqual(len(figures), 4, cal)
        for name, ns in figures.items():
            low = 5 if name.startswith("raw tracepoint") else 50
            self.assertTrue(low <= int(ns) <= 100000, "%s: %s ns" % (name, ns))
        self.assertTrue(budget["estimated"])
        self.assertEqual(budget["stage"], "as_asked", budget)
        # An idle target costs the daemon its polls (~0.3% here under load): under the budget.
        self.assertLess(budget["estimated_cost"], 0.008, budget)

    def test_grpc_clients_health_reflection_and_bad_requests(self):
        self.assertIsNotNone(API_CLIENT)
        env = dict(os.environ, THREADSCOPE_SOCKET=self.sock)
        r = subprocess.run([API_CLIENT], capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue(self.daemon.alive(), "the daemon died")

    def test_unprivileged_user_traces_only_their_own_processes(self):
        cli = self.nobody_cli()
        with harness.sleeping_python() as root_target:
            r = subprocess.run([cli, "--server", "unix:" + self.sock, "attach",
                                str(root_target.pid)],
                               capture_output=True, text=True, timeout=60,
                               preexec_fn=self.as_nobody)
            self.assertEqual(r.returncode, 5, r.stderr)
            self.assertIn("may not trace pid %d" % root_target.pid, r.stderr)
        # Their own program: the daemon (root) loads the probes on their behalf.
        out = self.path("bin")
        r = subprocess.run([cli, "--server", "unix:" + self.sock, "run", "--report",
                            os.path.join(out, "nobody.json"), "--", harness.DEBIAN_PYTHON, "-c",
                            "import threading; t = threading.Thread(target=len, args=('',)); "
                            "t.start(); t.join()"],
                           capture_output=True, text=True, timeout=60, preexec_fn=self.as_nobody)
        self.assertEqual(r.returncode, 0, r.stderr)
        rep = harness.load_json(os.path.join(out, "nobody.json"))
        self.assertEqual(rep["summary"]["started"], 1)

    def test_vanished_client_is_detached_with_its_connection(self):
        with harness.sleeping_python(60) as target:
            cli = harness.start_attach(target.pid, "--lease", "30s", server="unix:" + self.sock)
            self.assertNotEqual(harness.leftover_programs(), [])
            cli.kill()
            cli.wait()
            # Its connection closed: its lease ends at once, not 30 s later.
            harness.wait_for(lambda: not harness.leftover_programs(), timeout=10,
                             what="the lease to end with the connection")
            self.assertIn("no targets attached", self.cli("status").stdout)

    def test_a_connected_client_that_stops_using_a_target_loses_its_lease(self):
        self.assertIsNotNone(RAW_CLIENT)
        with harness.sleeping_python(60) as target:
            holder = subprocess.Popen([RAW_CLIENT, self.sock, "attach", str(target.pid),
                                       "--lease", "2", "--hold", "20"],
                                      stdout=subprocess.PIPE, text=True)
            try:
                self.assertTrue(holder.stdout.readline().startswith("OK"))
                self.assertNotEqual(harness.leftover_programs(), [])
                harness.wait_for(lambda: not harness.leftover_programs(), timeout=15,
                                 what="the idle lease to expire")
                self.assertIsNone(holder.poll())  # its connection is still open
            finally:
                holder.kill()
                holder.wait()

    def test_sigterm_detaches_everything_and_removes_the_socket(self):
        with harness.sleeping_python(60) as target:
            cli = harness.start_attach(target.pid, server=self.daemon.address)
            self.assertEqual(self.daemon.stop(signal.SIGTERM), 0)
            self.assertFalse(os.path.exists(self.sock))
            harness.wait_for(lambda: not harness.leftover_programs(), what="probes to go away")
            # The CLI notices and says so.
            self.assertNotEqual(cli.wait(timeout=30), 0)

    def test_second_daemon_on_the_same_socket_refuses(self):
        r = harness.run([harness.threadscoped(), "--socket", self.sock])
        self.assertEqual(r.returncode, 3)
        self.assertIn("already listening", r.stderr)


if __name__ == "__main__":
    harness.main()

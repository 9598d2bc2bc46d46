"""Deployment files hold what they promise: the systemd unit's capability set (not full root)
is enough for threadscoped to trace a real program, and its socket unit's activation works. (The
files' own consistency, the DaemonSet's included, is checked without root: tests/static.)"""
import json
import os
import re
import socket
import subprocess

import harness

HERE = os.path.dirname(os.path.abspath(__file__))
DEPLOY = os.path.join(HERE, "..", "..", "deploy")


def unit_capabilities():
    with open(os.path.join(DEPLOY, "systemd", "threadscoped.service")) as f:
        text = f.read()
    bounding = re.search(r"^CapabilityBoundingSet=(.*)$", text, re.M).group(1).split()
    ambient = re.search(r"^AmbientCapabilities=(.*)$", text, re.M).group(1).split()
    return text, bounding, ambient


class DeployTest(harness.BpfTestCase):
    """What the unit and manifests say is checked without root (tests/static/deploy_files_test);
    here, that it is enough."""

    def test_systemd_capabilities_are_enough(self):
        _, bounding, _ = unit_capabilities()
        caps = ",".join("+" + c[len("CAP_"):].lower() for c in bounding)
        # As the unit runs it: root, but bounded to exactly these capabilities.
        with harness.Daemon(self.tmp.name, prefix=["setpriv", "--bounding-set", "-all," + caps,
                                                   "--inh-caps", "-all", "--"]) as daemon:
            with open("/proc/%d/status" % daemon.proc.pid) as f:
                bnd = int(re.search(r"^CapBnd:\s*([0-9a-f]+)", f.read(), re.M).group(1), 16)
            self.assertEqual(bin(bnd).count("1"), len(bounding))
            report = self.path("r.json")
            r = daemon.cli("run", "--report", report, "--", harness.DEBIAN_PYTHON,
                           os.path.join(harness.PROGRAMS, "contention.py"), "0.005", "5",
                           timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            rep = harness.load_json(report)
            self.assertTrue(rep["probes"])
            self.assertTrue(all(p["attached"] for p in rep["probes"]))
            self.assertGreater(sum(l["contended"] for l in rep["locks"]), 0)
            self.assertTrue(rep["gil"]["traced"])

    def test_auto_attach_with_the_units_capabilities_and_config(self):
        """As the unit runs it, with the shipped config file (its one rule: every python3*):
        the exec watcher loads with the bounded set, and a python started afterwards is traced
        without anyone asking, then let go when it exits."""
        _, bounding, _ = unit_capabilities()
        caps = ",".join("+" + c[len("CAP_"):].lower() for c in bounding)
        config = os.path.join(DEPLOY, "systemd", "threadscoped.conf")
        with harness.Daemon(self.tmp.name, "--config", config, "--metrics-addr", "127.0.0.1:0",
                            prefix=["setpriv", "--bounding-set", "-all," + caps,
                                    "--inh-caps", "-all", "--"]) as daemon:
            self.assertIn("execs from raw_tp/sched_process_exec", daemon.read_log())
            job = subprocess.Popen([harness.DEBIAN_PYTHON, "-c",
                                    "import time; time.sleep(60)"])
            try:
                def traced():
                    r = daemon.cli("status", "-o", "json", timeout=30)
                    return any(t["pid"] == job.pid for t in json.loads(r.stdout)["targets"])
                harness.wait_for(traced, timeout=30, what="the python auto-attached")
                r = daemon.cli("status", "-o", "json", timeout=30)
                target = [t for t in json.loads(r.stdout)["targets"] if t["pid"] == job.pid][0]
                self.assertEqual(target["labels"].get("service"), "python")
                self.assertEqual(target["probes_attached"], target["probes"])
            finally:
                job.kill()
                job.wait()
            harness.wait_for(lambda: not traced(), timeout=30, what="the python let go")

    def test_socket_activation(self):
        """As threadscoped.socket does it: systemd binds the socket with the unit's mode and
        group and passes it as fd 3 (LISTEN_PID, LISTEN_FDS); the daemon serves it and leaves
        the file to its owner."""
        with open(os.path.join(DEPLOY, "systemd", "threadscoped.socket")) as f:
            unit = f.read()
        mode = int(re.search(r"(?m)^SocketMode=(\d+)$", unit).group(1), 8)
        path = self.path("activated.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        os.chmod(path, mode)
        listener.listen(16)
        listener.set_inheritable(True)  # Python sockets are close-on-exec by default

        def as_systemd_would():
            if listener.fileno() != 3:
                os.dup2(listener.fileno(), 3)
            os.environ["LISTEN_PID"] = str(os.getpid())
            os.environ["LISTEN_FDS"] = "1"

        try:
            with harness.Daemon(self.tmp.name, socket=self.path("unused.sock"), group=None,
                                log_name="activated.log", preexec_fn=as_systemd_would,
                                close_fds=False) as daemon:
                r = harness.run([harness.threadscope(), "--server", "unix:" + path, "status"],
                                timeout=60)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn("threadscoped", r.stdout + r.stderr)
                self.assertFalse(os.path.exists(self.path("unused.sock")))
                self.assertIn("socket from systemd", daemon.read_log())
        finally:
            listener.close()
        self.assertTrue(os.path.exists(path), "the daemon removed a socket it does not own")


if __name__ == "__main__":
    harness.main()

"""Deployment files hold what they promise: the systemd unit's capability set (not full root)
is enough for threadscoped to trace a real program, and the Kubernetes DaemonSet grants the same
capabilities, sees host pids and exposes the metrics Prometheus scrapes."""
import os
import re
import signal
import socket
import subprocess

import yaml

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
    def test_systemd_capabilities_are_enough(self):
        text, bounding, ambient = unit_capabilities()
        self.assertEqual(sorted(bounding), sorted(ambient))
        self.assertNotIn("CAP_SYS_ADMIN", bounding)
        self.assertIn("NoNewPrivileges=yes", text)
        sock = self.path("threadscope.sock")
        caps = ",".join("+" + c[len("CAP_"):].lower() for c in bounding)
        log = open(self.path("daemon.log"), "w")
        # As the unit runs it: root, but bounded to exactly these capabilities.
        daemon = subprocess.Popen(
            ["setpriv", "--bounding-set", "-all," + caps, "--inh-caps", "-all", "--",
             harness.threadscoped(), "--socket", sock, "--socket-group", "nogroup"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            harness.wait_for(lambda: os.path.exists(sock), what="the daemon")
            with open("/proc/%d/status" % daemon.pid) as f:
                bnd = int(re.search(r"^CapBnd:\s*([0-9a-f]+)", f.read(), re.M).group(1), 16)
            self.assertEqual(bin(bnd).count("1"), len(bounding))
            report = self.path("r.json")
            r = harness.run([harness.threadscope(), "--server", "unix:" + sock, "run",
                             "--report", report, "--", harness.DEBIAN_PYTHON,
                             os.path.join(harness.PROGRAMS, "contention.py"), "0.005", "5"],
                            timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            rep = harness.load_json(report)
            self.assertTrue(all(p["attached"] for p in rep["probes"]))
            self.assertGreater(sum(l["contended"] for l in rep["locks"]), 0)
            self.assertTrue(rep["gil"]["traced"])
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
            log.close()

    def test_socket_activation(self):
        """As threadscoped.socket does it: systemd binds the socket with the unit's mode and
        group and passes it as fd 3 (LISTEN_PID, LISTEN_FDS); the daemon serves it and leaves
        the file to its owner."""
        with open(os.path.join(DEPLOY, "systemd", "threadscoped.socket")) as f:
            unit = f.read()
        self.assertRegex(unit, r"(?m)^ListenStream=/run/threadscope/threadscope.sock$")
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

        log = open(self.path("activated.log"), "w")
        daemon = subprocess.Popen([harness.threadscoped(), "--socket", self.path("unused.sock")],
                                  stdout=log, stderr=subprocess.STDOUT,
                                  preexec_fn=as_systemd_would, close_fds=False)
        try:
            r = harness.run([harness.threadscope(), "--server", "unix:" + path, "status"],
                            timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("threadscoped", r.stdout + r.stderr)
            self.assertFalse(os.path.exists(self.path("unused.sock")))
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
            log.close()
            listener.close()
        self.assertTrue(os.path.exists(path), "the daemon removed a socket it does not own")
        with open(self.path("activated.log")) as f:
            self.assertIn("socket from systemd", f.read())

    def test_kubernetes_daemonset(self):
        _, bounding, _ = unit_capabilities()
        with open(os.path.join(DEPLOY, "kubernetes", "threadscoped.yaml")) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        ds = [d for d in docs if d["kind"] == "DaemonSet"][0]
        pod = ds["spec"]["template"]
        self.assertTrue(pod["spec"]["hostPID"])
        annotations = pod["metadata"]["annotations"]
        self.assertEqual(annotations["prometheus.io/scrape"], "true")
        container = pod["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        self.assertEqual(str(ports["metrics"]), annotations["prometheus.io/port"])
        self.assertIn("--metrics-addr=0.0.0.0:%d" % ports["metrics"], container["args"])
        sc = container["securityContext"]
        self.assertFalse(sc["privileged"])
        self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
        self.assertEqual(sorted(sc["capabilities"]["add"]),
                         sorted(c[len("CAP_"):] for c in bounding))


if __name__ == "__main__":
    harness.main()

"""The deployment files agree with each other and with what threadscoped needs: the systemd
unit grants a bounded capability set (never CAP_SYS_ADMIN) and no new privileges, its socket unit
serves the daemon's default socket, and the Kubernetes DaemonSet grants the same capabilities,
sees host pids and exposes the metrics Prometheus scrapes. (That the capabilities are enough to
trace is the root tier's deploy_test.)"""
import os
import re
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
DEPLOY = os.path.join(HERE, "..", "..", "deploy")


def read(*path):
    with open(os.path.join(DEPLOY, *path)) as f:
        return f.read()


def unit_capabilities():
    text = read("systemd", "threadscoped.service")
    bounding = re.search(r"^CapabilityBoundingSet=(.*)$", text, re.M).group(1).split()
    ambient = re.search(r"^AmbientCapabilities=(.*)$", text, re.M).group(1).split()
    return text, bounding, ambient


class DeployFilesTest(unittest.TestCase):
    def test_systemd_unit_bounds_the_daemon(self):
        text, bounding, ambient = unit_capabilities()
        self.assertTrue(bounding)
        self.assertEqual(sorted(bounding), sorted(ambient))
        self.assertNotIn("CAP_SYS_ADMIN", bounding)
        self.assertIn("NoNewPrivileges=yes", text)

    def test_socket_unit_serves_the_default_socket(self):
        unit = read("systemd", "threadscoped.socket")
        self.assertRegex(unit, r"(?m)^ListenStream=/run/threadscope/threadscope.sock$")
        self.assertRegex(unit, r"(?m)^SocketMode=0?660$")

    def test_kubernetes_daemonset(self):
        _, bounding, _ = unit_capabilities()
        docs = [d for d in yaml.safe_load_all(read("kubernetes", "threadscoped.yaml")) if d]
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
    unittest.main(verbosity=2)

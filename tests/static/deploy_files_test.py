"""The deployment files agree with each other and with what threadscoped needs: the systemd
unit grants a bounded capability set (never CAP_SYS_ADMIN) and no new privileges, its socket unit
serves the daemon's default socket, and the Kubernetes DaemonSet grants the same capabilities,
sees host pids and exposes the metrics Prometheus scrapes. (That the capabilities are enough to
trace is the root tier's deploy_test.)"""
import os
import re
import subprocess
import tempfile
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


    def check_config(self, text):
        """threadscoped --check-config on a config file's text: (exit status, output)."""
        with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
            f.write(text)
            f.flush()
            r = subprocess.run([os.environ["THREADSCOPED"], "--config", f.name, "--check-config"],
                               capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout + r.stderr

    def test_systemd_unit_auto_attaches_with_the_example_config(self):
        text, _, _ = unit_capabilities()
        exec_start = re.search(r"^ExecStart=(.*)$", text, re.M).group(1).split()
        self.assertIn("--config", exec_start)
        self.assertEqual(exec_start[exec_start.index("--config") + 1],
                         "/etc/threadscope/threadscoped.conf")
        self.assertIn("threadscoped.conf /etc/threadscope/threadscoped.conf", text)
        code, out = self.check_config(read("systemd", "threadscoped.conf"))
        self.assertEqual(code, 0, out)
        self.assertRegex(out, r"1 auto-attach rule\(s\)")

    def test_kubernetes_daemonset_auto_attaches_from_its_configmap(self):
        docs = [d for d in yaml.safe_load_all(read("kubernetes", "threadscoped.yaml")) if d]
        ds = [d for d in docs if d["kind"] == "DaemonSet"][0]
        cm = [d for d in docs if d["kind"] == "ConfigMap"][0]
        pod = ds["spec"]["template"]["spec"]
        container = pod["containers"][0]
        config_arg = [a for a in container["args"] if a.startswith("--config=")]
        self.assertEqual(len(config_arg), 1)
        path = config_arg[0][len("--config="):]
        mount = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
        self.assertEqual(len(mount), 1, container["volumeMounts"])
        self.assertTrue(mount[0].get("readOnly"))
        volume = [v for v in pod["volumes"] if v["name"] == mount[0]["name"]][0]
        self.assertEqual(volume["configMap"]["name"], cm["metadata"]["name"])
        self.assertEqual(cm["metadata"]["namespace"], ds["metadata"]["namespace"])
        key = os.path.basename(path)
        self.assertIn(key, cm["data"])
        code, out = self.check_config(cm["data"][key])
        self.assertEqual(code, 0, out)
        self.assertIn("cgroup=*kubepods*", out)
        # The node label the fleet dashboard groups by.
        self.assertIn("--label=node=$(NODE_NAME)", container["args"])

    def test_bad_config_is_one_line_and_exit_4(self):
        code, out = self.check_config("[rule x]\nmatch = exe=*\nlocks = sometimes\n")
        self.assertEqual(code, 4, out)
        self.assertIn(":3: rule x: locks must be", out)


if __name__ == "__main__":
    unittest.main(verbosity=2)

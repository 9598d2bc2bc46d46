"""The Grafana dashboard and the Prometheus alert rules, as files: the dashboard's structure,
and promtool's checks of the rules and their unit tests. (That every panel has data from a real
daemon is the root tier's metrics_test.)"""
import json
import os
import subprocess
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
DASHBOARDS = os.path.join(HERE, "..", "..", "dashboards")


class DashboardsTest(unittest.TestCase):
    def test_dashboard_structure(self):
        with open(os.path.join(DASHBOARDS, "threadscope.json")) as f:
            dash = json.load(f)
        self.assertEqual(dash["__inputs"][0]["name"], "DS_PROMETHEUS")
        names = [v["name"] for v in dash["templating"]["list"]]
        self.assertEqual(names, ["DS_PROMETHEUS", "instance", "service", "pid"])
        rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
        self.assertEqual(rows, ["Overview", "Threads", "Locks", "GIL"])
        ids = [p["id"] for p in dash["panels"]]
        self.assertEqual(len(ids), len(set(ids)))
        panels = [p for p in dash["panels"] if p["type"] != "row"]
        self.assertTrue(panels)
        for p in panels:
            self.assertEqual(p["datasource"]["uid"], "${DS_PROMETHEUS}", p["title"])
            self.assertTrue(p["fieldConfig"]["defaults"].get("unit"), p["title"])
            self.assertTrue(p["targets"], p["title"])
            for t in p["targets"]:
                self.assertEqual(t["datasource"]["uid"], "${DS_PROMETHEUS}", p["title"])
                self.assertRegex(t["expr"], r"threadscope_[a-z_]+", p["title"])

    def test_fleet_dashboard_structure(self):
        with open(os.path.join(DASHBOARDS, "threadscope-fleet.json")) as f:
            dash = json.load(f)
        self.assertEqual(dash["__inputs"][0]["name"], "DS_PROMETHEUS")
        self.assertNotEqual(dash["uid"], "threadscope")
        names = [v["name"] for v in dash["templating"]["list"]]
        self.assertEqual(names, ["DS_PROMETHEUS", "node", "service"])
        rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
        self.assertEqual(rows, ["Fleet", "Contention across the fleet",
                                "Auto-attach and the daemons"])
        ids = [p["id"] for p in dash["panels"]]
        self.assertEqual(len(ids), len(set(ids)))
        panels = [p for p in dash["panels"] if p["type"] != "row"]
        exprs = {}
        for p in panels:
            self.assertEqual(p["datasource"]["uid"], "${DS_PROMETHEUS}", p["title"])
            self.assertTrue(p["fieldConfig"]["defaults"].get("unit"), p["title"])
            self.assertTrue(p["targets"], p["title"])
            for t in p["targets"]:
                self.assertEqual(t["datasource"]["uid"], "${DS_PROMETHEUS}", p["title"])
                self.assertRegex(t["expr"], r"threadscope_[a-z_]+", p["title"])
                exprs.setdefault(p["title"], []).append(t["expr"])
        joined = "\n".join(e for es in exprs.values() for e in es)
        # By node, pod and service; the fleet's top contended sites; budget stages by target.
        self.assertIn("count by (node)", joined)
        self.assertIn("pod_uid", joined)
        self.assertIn("count by (service)", joined)
        self.assertRegex(joined, r"topk\(\d+, sum by \(site")
        budget = [e for e in joined.splitlines() if "threadscope_budget_stage" in e]
        self.assertTrue(budget)
        self.assertIn("target", budget[0])
        # Every query filters by the dashboard's node variable.
        for title, es in exprs.items():
            for e in es:
                self.assertIn('node=~"$node"', e, title)

    def test_alert_rules(self):
        alerts = os.path.join(DASHBOARDS, "alerts")
        r = subprocess.run(["promtool", "check", "rules",
                            os.path.join(alerts, "threadscope-rules.yml")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = subprocess.run(["promtool", "test", "rules", "threadscope-rules.test.yml"],
                           cwd=alerts, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)

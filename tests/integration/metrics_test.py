"""Metrics end to end: a real daemon serving --metrics-addr while it traces a real Python
workload, a real Prometheus (Debian's) scraping it, and every query of the Grafana dashboard
evaluated through Prometheus's HTTP API: none may fail or come back empty. Also: promtool checks
the exposition. (The dashboard's structure and the alert rules need no root:
tests/static/dashboards_test.)"""
import json
import os
import re
import signal
import subprocess
import time

import harness


class MetricsTest(harness.BpfTestCase):
    def test_prometheus_scrapes_and_every_panel_has_data(self):
        # Every port here is bound as 0 and read back from the program that bound it.
        daemon = harness.Daemon(self.tmp.name, "--metrics-addr", "127.0.0.1:0", "--label",
                                "node=ci").__enter__()
        procs = [daemon.proc]
        try:
            metrics_port = daemon.metrics_port()
            sock = daemon.sock
            url = "http://127.0.0.1:%d/metrics" % metrics_port
            harness.wait_for(lambda: harness.http_text(url), what="the metrics endpoint")
            # One workload per Debian build (and extra), all traced by the one daemon at once,
            # each labelled with its interpreter: service="debian-unstable-3.14" etc.
            interps = self.present_interpreters(kinds=harness.CORE)
            by_label = {i.label: i for i in interps}
            workloads = {}
            for interp in interps:
                workloads[interp.label] = subprocess.Popen(
                    [harness.threadscope(), "--server", "unix:" + sock, "run", "--no-live",
                     "--label", "service=" + interp.label, "--"] + interp.argv +
                    [os.path.join(harness.PROGRAMS, "metrics_workload.py"), "25"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                procs.append(workloads[interp.label])
            for label in workloads:
                harness.wait_for(lambda: re.search(r'threadscope_target_info\{[^}]*service="%s"'
                                                   % re.escape(label), harness.http_text(url)),
                                 timeout=30, what="%s's target in the exposition" % label)
            time.sleep(2)
            exposition = harness.http_get(url)
            # The exposition passes promtool's checks (names, units, _total, HELP/TYPE).
            self.assertEqual(harness.promtool_check(exposition), "")
            self.assertIn('node="ci"', exposition)
            self.assertIn('threadscope_gil_switches_total{', exposition)
            self.assertRegex(exposition, r'threadscope_lock_contentions_total\{[^}]*lock="0x')
            for label in workloads:
                # Every interpreter's GIL and lock series are there, under its own label.
                with self.subTest(interpreter=label):
                    service = r'(?=[^}]*service="%s")' % re.escape(label)
                    if not by_label[label].free_threaded():  # no GIL there
                        self.assertRegex(exposition,
                                         r"threadscope_gil_switches_total\{" + service)
                    self.assertRegex(exposition, r"threadscope_lock_contentions_total\{" +
                                     service + r'(?=[^}]*lock="0x)')
            # Every metric a panel or variable names is one the daemon exports.
            exported = set(re.findall(r"^# TYPE (\S+) ", exposition, re.M))
            dash = harness.dashboard("threadscope.json")
            dash_text = json.dumps(dash)
            for name in set(re.findall(r"threadscope_[a-z_]+", dash_text)) - {"threadscope_"}:
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                if name.startswith("threadscope_") and "." not in name and name != "threadscope":
                    self.assertTrue(name in exported or base in exported,
                                    "the dashboard uses %s, which is not exported" % name)

            prom = harness.Prometheus(self.tmp.name, metrics_port)
            self.addCleanup(prom.stop)

            def scraped():
                return any(float(s["value"][1]) >= 8 for s in
                           prom.result("count_over_time(threadscope_target_info[1m])"))

            harness.wait_for(scraped, timeout=60, what="8 scrapes of the daemon by Prometheus")
            for label, workload in workloads.items():
                self.assertIsNone(workload.poll(), "%s's workload ended before the queries ran"
                                  % label)

            self.assertEqual(prom.dashboard_failures(dash), [])
            # Variables resolve too.
            for var in dash["templating"]["list"][1:]:
                m = re.match(r"label_values\((.*), (\w+)\)$", var["query"]["query"])
                self.assertIsNotNone(m, var)
                selector = re.sub(r"\$(instance|service|pid)\b", ".*", m.group(1))
                res = prom.query("count by (%s) (%s)" % (m.group(2), selector))
                self.assertTrue(res["data"]["result"], var["name"])
        finally:
            for p in reversed(procs[1:]):
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    try:
                        p.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        p.kill()
            daemon.stop()


if __name__ == "__main__":
    harness.main()

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
import urllib.parse
import urllib.request

import harness

def dashboards_dir():
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(here, "..", "..", "dashboards"),
                      os.path.join(os.environ.get("TEST_SRCDIR", ""), "__main__", "dashboards")):
        if os.path.exists(os.path.join(candidate, "threadscope.json")):
            return os.path.abspath(candidate)
    raise RuntimeError("dashboards/ not found next to the tests")


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def http_text(url):
    """The body, or "" while the server is not answering yet."""
    try:
        return http_get(url)
    except OSError:
        return ""


def panel_queries(dashboard):
    for p in dashboard["panels"]:
        if p["type"] == "row":
            continue
        for t in p.get("targets", []):
            yield p, t["expr"]


def instantiate(expr):
    """A dashboard query with Grafana's variables as Grafana would fill them ("All")."""
    expr = expr.replace("$__rate_interval", "10s")
    return re.sub(r"\$(instance|service|pid)\b", ".*", expr)


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
            harness.wait_for(lambda: http_text(url), what="the metrics endpoint")
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
                                                   % re.escape(label), http_text(url)),
                                 timeout=30, what="%s's target in the exposition" % label)
            time.sleep(2)
            exposition = http_get(url)
            # The exposition passes promtool's checks (names, units, _total, HELP/TYPE).
            r = subprocess.run(["promtool", "check", "metrics"], input=exposition,
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
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
            with open(os.path.join(dashboards_dir(), "threadscope.json")) as f:
                dash_text = f.read()
            for name in set(re.findall(r"threadscope_[a-z_]+", dash_text)) - {"threadscope_"}:
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                if name.startswith("threadscope_") and "." not in name and name != "threadscope":
                    self.assertTrue(name in exported or base in exported,
                                    "the dashboard uses %s, which is not exported" % name)

            config = self.path("prometheus.yml")
            with open(config, "w") as f:
                f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                        "scrape_configs:\n  - job_name: threadscope\n"
                        "    static_configs:\n      - targets: ['127.0.0.1:%d']\n" % metrics_port)
            prom_log = open(self.path("prometheus.log"), "w")
            prom = subprocess.Popen(
                ["prometheus", "--config.file", config, "--storage.tsdb.path",
                 self.path("tsdb"), "--web.listen-address", "127.0.0.1:0"],
                stdout=prom_log, stderr=subprocess.STDOUT)
            procs.append(prom)
            harness.wait_for(lambda: harness.listening_ports(prom.pid) or prom.poll() is not None,
                             timeout=30, what="Prometheus to listen")
            self.assertIsNone(prom.poll(), "prometheus exited")
            api = "http://127.0.0.1:%d/api/v1/" % harness.listening_ports(prom.pid)[0]

            def query(expr):
                body = http_get(api + "query?" + urllib.parse.urlencode({"query": expr}))
                return json.loads(body)

            def scraped():
                try:
                    res = query("count_over_time(threadscope_target_info[1m])")
                except OSError:
                    return False
                return any(float(s["value"][1]) >= 8 for s in res["data"]["result"])

            harness.wait_for(scraped, timeout=60, what="8 scrapes of the daemon by Prometheus")
            for label, workload in workloads.items():
                self.assertIsNone(workload.poll(), "%s's workload ended before the queries ran"
                                  % label)

            with open(os.path.join(dashboards_dir(), "threadscope.json")) as f:
                dash = json.load(f)
            failures = []
            for panel, expr in panel_queries(dash):
                res = query(instantiate(expr))
                if res.get("status") != "success":
                    failures.append("%s: %s -> %s" % (panel["title"], expr, res))
                elif not res["data"]["result"]:
                    failures.append("%s: %s -> empty" % (panel["title"], expr))
            self.assertEqual(failures, [])
            # Variables resolve too.
            for var in dash["templating"]["list"][1:]:
                m = re.match(r"label_values\((.*), (\w+)\)$", var["query"]["query"])
                self.assertIsNotNone(m, var)
                selector = re.sub(r"\$(instance|service|pid)\b", ".*", m.group(1))
                res = query("count by (%s) (%s)" % (m.group(2), selector))
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
            if "prom_log" in locals():
                prom_log.close()


if __name__ == "__main__":
    harness.main()

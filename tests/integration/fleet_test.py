"""Fleet end to end (issue 15, part A): a daemon started with an auto-attach rule (from a config
file), scraped by a real Prometheus, traces the matching CPython process running when it starts
and those started after it, without being asked: one on the host, one in a container (its own pid and mount namespaces,
pivot_root-ed into the Debian unstable root, in a Kubernetes-style cgroup made for it), each
with the rule's labels and the container's pod and container ids from its cgroup path. A
2-second job's final counters reach Prometheus after it exited (retention); a python that
matches no rule is never attached; the target limit holds (the match past it is refused and
counted). `threadscope status` shows the rule's counters, and every query of the fleet
dashboard is answered by Prometheus."""
import json
import os
import shutil
import signal
import subprocess
import time
import uuid

import harness

CGROUP_V2 = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
JOB = os.path.join(harness.PROGRAMS, "fleet_job.py")
# Metrics scraped every second; an exited target's last values stay 8 s (> 2 scrapes).
RETENTION_S = 8


class FleetTest(harness.BpfTestCase):
    def test_auto_attach_fleet(self):
        root = harness.matrix.debian_unstable_root()
        self.assertTrue(os.path.exists(os.path.join(root, "usr/bin/python3.13")),
                        "the Debian unstable root (%s) has no python3.13" % root)
        config = self.path("threadscoped.conf")
        with open(config, "w") as f:
            f.write("# fleet_test\n"
                    "max-targets = 3\n"
                    "metrics-retention = %ds\n"
                    "label.node = fleet-ci\n"
                    "\n"
                    "[rule jobs]\n"
                    "match = exe=*/python3*,cmdline=fleet_job\\.py\n"
                    "locks = all\n"
                    "lock-stacks = 4\n"
                    "label.service = fleet-svc\n" % RETENTION_S)
        # The config is checked without starting anything, and a bad one stops the daemon with
        # one line and its own exit code.
        r = subprocess.run([harness.threadscoped(), "--config", config, "--check-config"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("jobs: exe=*/python3*,cmdline=fleet_job", r.stdout)
        bad = self.path("bad.conf")
        with open(bad, "w") as f:
            f.write("[rule x]\nmatch = exe=*\nlocks = sometimes\n\x00junk\n")
        r = subprocess.run([harness.threadscoped(), "--socket", self.path("bad.sock"),
                            "--config", bad], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn("bad.conf:3:", r.stderr)

        procs = []
        cgroup_dirs = []
        # 0. A matching job already running when the daemon starts: found by the start-up scan.
        early = subprocess.Popen([harness.DEBIAN_PYTHON, JOB, "120", self.path("early.json"),
                                  self.path("early.go")])
        procs.append(early)
        daemon = harness.Daemon(self.tmp.name, "--metrics-addr", "127.0.0.1:0", "--config",
                                config).__enter__()
        try:
            self.assertIn("auto-attach: 1 rule(s), at most 3 targets", daemon.read_log())
            url = "http://127.0.0.1:%d/metrics" % daemon.metrics_port()
            harness.wait_for(lambda: harness.http_text(url), what="the metrics endpoint")
            # Daemon-level series (with at most the early job attached).
            exposition = harness.http_get(url)
            for name in ("threadscope_build_info", "threadscope_daemon_cpu_seconds_total",
                         "threadscope_daemon_resident_memory_bytes",
                         "threadscope_autoattach_targets", "threadscope_autoattach_max_targets"):
                self.assertIsNotNone(harness.series_value(exposition, name), name)
            self.assertEqual(harness.series_value(exposition, "threadscope_autoattach_max_targets"), 3)

            prom = harness.Prometheus(self.tmp.name, daemon.metrics_port())
            self.addCleanup(prom.stop)
            query = prom.result

            def status():
                out = daemon.cli("status", "-o", "json", timeout=30)
                self.assertEqual(out.returncode, 0, out.stderr)
                return json.loads(out.stdout)

            def traced(pid):
                return any(t["pid"] == pid for t in status()["targets"])

            # A python no rule matches: never attached, whatever else happens.
            bystander = subprocess.Popen([harness.DEBIAN_PYTHON, "-c",
                                          "import time; time.sleep(120)"])
            procs.append(bystander)

            harness.wait_for(lambda: traced(early.pid), timeout=30,
                             what="the job running before the daemon attached")
            open(self.path("early.go"), "w").close()

            # 1. A matching job on the host, started after the daemon.
            host = subprocess.Popen([harness.DEBIAN_PYTHON, JOB, "120", self.path("host.json"),
                                     self.path("host.go")])
            procs.append(host)
            harness.wait_for(lambda: traced(host.pid), timeout=30, what="the host job attached")
            open(self.path("host.go"), "w").close()
            harness.wait_for(lambda: os.path.exists(self.path("host.json")), timeout=30,
                             what="the host job's threads")
            harness.wait_for(lambda: query('threadscope_thread_starts_total{pid="%d",'
                                           'service="fleet-svc",node="fleet-ci"} == 3' % host.pid),
                             timeout=30, what="the host job's series in Prometheus")
            # The rule's trace options reached the attach (locks = all: every acquisition).
            self.assertTrue(query('threadscope_target_info{pid="%d",lock_mode="all"}' % host.pid))
            self.assertTrue(query('sum(threadscope_lock_acquisitions_total{pid="%d"}) >= 60'
                                  % host.pid))

            # 2. A 2-second job: attached, exits, and its final counters are in Prometheus.
            short = subprocess.Popen([harness.DEBIAN_PYTHON, JOB, "2", self.path("short.json"),
                                      self.path("short.go")])
            procs.append(short)
            harness.wait_for(lambda: traced(short.pid), timeout=30, what="the short job attached")
            open(self.path("short.go"), "w").close()
            short.wait(timeout=60)
            harness.wait_for(lambda: not traced(short.pid), timeout=30,
                             what="the short job let go after it exited")
            self.assertIn("pid %d exited" % short.pid, daemon.read_log())
            # Its last values are still exposed (retained) and Prometheus scrapes them there.
            exposition = harness.http_get(url)
            self.assertEqual(harness.series_value(exposition, "threadscope_thread_starts_total",
                                          pid=short.pid), 3, exposition[-3000:])
            self.assertGreaterEqual(harness.series_value(exposition, "threadscope_targets",
                                                 state="retained"), 1)
            exited_at = time.time()
            harness.wait_for(lambda: query('threadscope_thread_starts_total{pid="%d",'
                                           'service="fleet-svc"} == 3' % short.pid) and
                             time.time() > exited_at + 2.5,
                             timeout=30, what="the short job's final counters in Prometheus")
            contended = query('sum(threadscope_lock_contentions_total{pid="%d"})' % short.pid)
            self.assertTrue(contended and float(contended[0]["value"][1]) > 0, contended)

            # 3. A matching job in a container: its own namespaces, the Debian unstable root as
            # its image, a cgroup named as the kubelet and containerd name theirs.
            pod_uid = str(uuid.uuid4())
            container_id = uuid.uuid4().hex + uuid.uuid4().hex
            pod = os.path.join(CGROUP_V2, "kubepods.slice", "kubepods-besteffort.slice",
                               "kubepods-besteffort-pod%s.slice" % pod_uid.replace("-", "_"))
            scope = os.path.join(pod, "cri-containerd-%s.scope" % container_id)
            os.makedirs(scope)
            cgroup_dirs[:0] = [scope, pod]
            mnt = self.path("container")
            os.makedirs(mnt)
            shutil.copy(JOB, os.path.join(mnt, "fleet_job.py"))
            inside = ("echo $$ > {scope}/cgroup.procs && "
                      "mount --bind {r} {r} && mount --bind {d} {r}/mnt && "
                      "mount -t proc proc {r}/proc && cd {r} && pivot_root . . && umount -l . && "
                      "exec /usr/bin/python3.13 /mnt/fleet_job.py 120 /mnt/c.json /mnt/c.go"
                      ).format(scope=scope, r=root, d=mnt)
            container = subprocess.Popen(["unshare", "--pid", "--mount", "--fork",
                                          "--mount-proc", "sh", "-c", inside],
                                         start_new_session=True)
            procs.append(container)
            harness.wait_for(lambda: subprocess.run(["pgrep", "-P", str(container.pid)],
                                                    capture_output=True).stdout.strip(),
                             timeout=20, what="the container's process")
            cpid = int(subprocess.check_output(["pgrep", "-P", str(container.pid)],
                                               text=True).split()[0])
            harness.wait_for(lambda: traced(cpid), timeout=30, what="the container job attached")
            open(os.path.join(mnt, "c.go"), "w").close()
            harness.wait_for(lambda: os.path.exists(os.path.join(mnt, "c.json")), timeout=30,
                             what="the container job's threads")
            t = [t for t in status()["targets"] if t["pid"] == cpid][0]
            self.assertEqual(t["labels"].get("pod_uid"), pod_uid, t)
            self.assertEqual(t["labels"].get("container_id"), container_id, t)
            self.assertEqual(t["labels"].get("service"), "fleet-svc", t)
            harness.wait_for(lambda: query(
                'threadscope_thread_starts_total{pid="%d",pod_uid="%s",container_id="%s",'
                'container_runtime="containerd",service="fleet-svc"} == 3'
                % (cpid, pod_uid, container_id)),
                timeout=30, what="the container job's series with its labels in Prometheus")

            # 4. The limit: three targets now; one more match is refused, and counted.
            third = subprocess.Popen([harness.DEBIAN_PYTHON, JOB, "60", self.path("third.json")])
            procs.append(third)
            harness.wait_for(lambda: (harness.series_value(harness.http_get(url),
                                                   "threadscope_autoattach_refusals_total",
                                                   rule="jobs", reason="limit") or 0) >= 1,
                             timeout=30, what="the third match refused at the limit")
            time.sleep(1)
            s = status()
            self.assertFalse(traced(third.pid))
            self.assertEqual(s["auto_attach"]["targets"], 3, s["auto_attach"])
            rule = s["auto_attach"]["rules"][0]
            self.assertEqual(rule["name"], "jobs")
            self.assertEqual(rule["attaches"], 4, rule)
            self.assertEqual(rule["refusals_by_reason"].get("limit"), 1, rule)
            self.assertEqual(rule["failures"], 0, rule)
            text = daemon.cli("status", timeout=30)
            self.assertIn("rule jobs (", text.stdout)
            self.assertIn("4 attached, 1 refused", text.stdout)

            # The bystander was never attached and has no series.
            self.assertFalse(traced(bystander.pid))
            self.assertNotIn('pid="%d"' % bystander.pid, harness.http_get(url))
            self.assertNotRegex(daemon.read_log(), r"pid %d\b" % bystander.pid)

            # Auto-attached targets run under the default overhead budget (1% of a core): the
            # budget panel's series is there for them.
            exposition = harness.http_get(url)
            self.assertEqual(harness.series_value(exposition, "threadscope_budget_ratio",
                                          pid=str(early.pid)),
                             0.01, exposition)
            self.assertIsNotNone(harness.series_value(exposition, "threadscope_budget_stage",
                                              pid=str(early.pid)), exposition)

            # The exposition passes promtool, and every fleet dashboard query has data.
            self.assertEqual(harness.promtool_check(exposition), "")
            harness.wait_for(lambda: query('count_over_time(threadscope_autoattach_targets[1m])'
                                           ' >= 5'), timeout=30, what="5 scrapes")
            self.assertEqual(prom.dashboard_failures(harness.dashboard("threadscope-fleet.json")),
                             [])

            # Retention is bounded: the short job's series leave the exposition.
            harness.wait_for(lambda: 'pid="%d"' % short.pid not in harness.http_get(url),
                             timeout=RETENTION_S + 10, what="the short job's series to expire")
        finally:
            for p in reversed(procs):
                if p.poll() is None:
                    p.send_signal(signal.SIGKILL if p.args[0] == "unshare" else signal.SIGTERM)
                    try:
                        p.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
            if "container" in locals():
                try:
                    os.killpg(container.pid, signal.SIGKILL)
                except OSError:
                    pass
            daemon.stop()
            for d in cgroup_dirs:
                for _ in range(50):
                    try:
                        os.rmdir(d)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.1)
            for d in (os.path.join(CGROUP_V2, "kubepods.slice", "kubepods-besteffort.slice"),
                      os.path.join(CGROUP_V2, "kubepods.slice")):
                try:
                    os.rmdir(d)
                except OSError:
                    pass


if __name__ == "__main__":
    harness.main()

"""Shared helpers for the root tier: real BPF, real interpreters, the real CLI and daemon.

Every test leaves nothing attached: BpfTestCase checks after each test that no threadscope
BPF program (names start with ts_) is still loaded.
"""
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAMS = os.path.join(os.path.dirname(HERE), "programs")
sys.path.insert(0, os.path.dirname(HERE))
import interpreters as matrix  # noqa: E402  (tests/interpreters.py: the one interpreter list)

# Kinds of interpreter that tests too costly to run on every pyenv version run on: Debian's own
# builds (12's python3.11, unstable's 3.13-3.15) and the extras of THREADSCOPE_EXTRA_PYTHONS.
CORE = ("system", "debian-unstable", "extra")


def debian_python():
    """Debian 12's python3.11 (the matrix's debian-3.11): where a test needs one host
    interpreter it can run as any user, without the root's mount namespace."""
    return matrix.find("debian-3.11")


DEBIAN_PYTHON = debian_python().path


def threadscope():
    return os.environ["THREADSCOPE"]


def threadscoped():
    return os.environ["THREADSCOPED"]


def interpreters():
    """Every interpreter of the matrix (tests/interpreters.json and THREADSCOPE_EXTRA_PYTHONS),
    resolved: matrix.Interpreter objects, present or not."""
    return matrix.resolve()


def leftover_programs():
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True)
    if out.returncode != 0:
        return []
    return sorted(p.get("name", "") for p in json.loads(out.stdout or "[]")
                  if p.get("name", "").startswith("ts_"))


@contextlib.contextmanager
def sleeping_python(seconds=30, interp=None, **popen_kwargs):
    """A CPython process that does nothing for a while: something to attach to. `interp`: a
    matrix.Interpreter (default Debian 12's python3.11)."""
    interp = interp or debian_python()
    p = interp.popen(["-c", "import time; time.sleep(%d)" % seconds], **popen_kwargs)
    try:
        time.sleep(0.2)
        yield p
    finally:
        p.kill()
        p.wait()


def start_attach(pid, *args, server=None, stdout=subprocess.DEVNULL):
    """`threadscope attach PID --no-live ARGS` in the background, returned once probes are live
    (the banner on stderr says so)."""
    cmd = [threadscope()] + (["--server", server] if server else [])
    cli = subprocess.Popen(cmd + ["attach", str(pid), "--no-live"] + list(args),
                           stdout=stdout, stderr=subprocess.PIPE, text=True)
    banner = cli.stderr.readline()
    if "probes attached" not in banner:
        cli.kill()
        raise AssertionError("attach to %d failed: %s%s" % (pid, banner, cli.stderr.read()))
    return cli


def run(args, timeout=60, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)


def load_json(path):
    with open(path) as f:
        return json.load(f)


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def require_root():
    """The root tier needs root: without it, it fails, loudly, rather than skipping green."""
    if os.geteuid() != 0:
        raise AssertionError(NOT_RUN % os.path.basename(sys.argv[0]))


NOT_RUN = ("NOT RUN: %s is the root tier (real BPF, real interpreters, real daemons) and needs "
           "root. Run it as root (./tools/test.sh), or the tiers that need nothing: "
           "bazel test --config=unit //...")


class BpfTestCase(unittest.TestCase):
    def setUp(self):
        require_root()
        self.assertEqual(leftover_programs(), [], "BPF programs left over from before this test")
        self.tmp = tempfile.TemporaryDirectory(prefix="ts_it_")

    def tearDown(self):
        # Links are file descriptors: when every threadscope process is gone, so is every probe.
        wait_for(lambda: not leftover_programs(), timeout=10, what="BPF programs to unload")
        self.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def for_each_interpreter(self, body, only=None, kinds=None):
        """Runs body(interp) as a subtest per interpreter of the matrix (a matrix.Interpreter:
        interp.argv runs it, interp.label names it), or those whose label is in `only` (or for
        which `only(interp)` is true), or of `kinds`. Absent optional interpreters are skipped
        with a "SKIP label: reason" line; an absent required one fails."""
        ran = 0
        for interp in interpreters():
            if kinds is not None and interp.kind not in kinds:
                continue
            if only is not None and not (only(interp) if callable(only)
                                         else interp.label in only):
                continue
            with self.subTest(interpreter=interp.label):
                if not interp.present:
                    if interp.required:
                        self.fail("%s is required: %s" % (interp.label, interp.missing))
                    sys.stderr.write("SKIP %s: %s\n" % (interp.label, interp.missing))
                    continue
                started = time.time()
                try:
                    body(interp)
                finally:
                    sys.stderr.write("%s %s: %.1fs\n" % (self.id().rsplit(".", 1)[-1],
                                                          interp.label, time.time() - started))
                ran += 1
        self.assertGreater(ran, 0)

    def present_interpreters(self, kinds=None):
        """The interpreters of `kinds` that are here, for a test that runs them all at once;
        each absent one is skipped by name, or fails its subtest when it is required."""
        out = []
        for interp in interpreters():
            if kinds is not None and interp.kind not in kinds:
                continue
            if interp.present:
                out.append(interp)
            elif interp.required:
                with self.subTest(interpreter=interp.label):
                    self.fail("%s is required: %s" % (interp.label, interp.missing))
            else:
                sys.stderr.write("SKIP %s: %s\n" % (interp.label, interp.missing))
        self.assertTrue(out)
        return out


def main():
    if os.geteuid() != 0:
        # One line the test log and Bazel's summary show, and a failing target.
        sys.stderr.write(NOT_RUN % os.path.basename(sys.argv[0]) + "\n")
        sys.exit(1)
    unittest.main(verbosity=2)


NOBODY = 65534


def as_nobody():
    """preexec_fn: drop to nobody:nogroup (the group that may use the test daemons' sockets)."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


class Daemon:
    """threadscoped, started and waited for: the one way tests run a daemon. It serves a Unix
    socket of its own inside `directory` (`socket` to name another), group `nogroup` so that
    unprivileged test users may connect, and is ready once its log says it listens. Ports it is
    asked to bind as 0 (`--metrics-addr 127.0.0.1:0`, `--listen-tcp 127.0.0.1:0`) are the
    kernel's choice, read back from that log: no port is ever guessed. Stopped with SIGTERM on
    exit. `prefix` runs it under another command (setpriv, prlimit); `popen` are extra Popen
    arguments (a socket passed as systemd would)."""

    def __init__(self, directory, *args, prefix=(), socket=None, group="nogroup",
                 log_name="daemon.log", **popen):
        os.chmod(directory, 0o755)  # unprivileged clients reach the socket through it
        self.sock = socket or os.path.join(directory, "threadscope.sock")
        self.address = "unix:" + self.sock
        self.log_path = os.path.join(directory, log_name)
        self.args = [threadscoped(), "--socket", self.sock] + (
            ["--socket-group", group] if group else []) + list(args)
        self.prefix = list(prefix)
        self.popen = popen
        self.proc = None

    def __enter__(self):
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.prefix + self.args, stdout=self.log,
                                     stderr=subprocess.STDOUT, **self.popen)
        wait_for(lambda: "threadscoped listening on unix:" in self.read_log() or
                 self.proc.poll() is not None, what="the daemon to listen")
        if self.proc.poll() is not None:
            raise AssertionError("threadscoped exited: " + self.read_log())
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self, sig=signal.SIGTERM):
        """Stops it (SIGTERM: it detaches everything first); its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.log.close()
        return self.proc.returncode

    def alive(self):
        return self.proc.poll() is None

    def read_log(self):
        with open(self.log_path) as f:
            return f.read()

    def _bound(self, pattern, what):
        m = re.search(pattern, self.read_log())
        if not m:
            raise AssertionError("the daemon's log names no %s port: %s" % (what, self.read_log()))
        return int(m.group(1))

    def metrics_port(self):
        """The port --metrics-addr bound (logged as "metrics on http://HOST:PORT/metrics")."""
        return self._bound(r"metrics on http://[^ ]*:(\d+)/metrics", "metrics")

    def tcp_port(self):
        """The port --listen-tcp bound (logged as "listening on HOST:PORT (TLS, ...)")."""
        return self._bound(r"threadscoped listening on (?!unix:)[^ ]*:(\d+) \(TLS", "TCP")

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def cpu_seconds(self):
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def cli(self, *args, **kwargs):
        return run([threadscope(), "--server", self.address] + list(args), **kwargs)


def listening_ports(pid):
    """The TCP ports process `pid` listens on, as the kernel has them (/proc/PID/net/tcp{,6} and
    its socket descriptors): for programs told to bind port 0 that do not say which they got."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            with open("/proc/%d/net/%s" % (pid, table)) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return sorted(ports)


def copy_for_nobody(path, directory):
    """A copy of an executable that nobody may run, in a directory nobody may enter."""
    os.makedirs(directory, exist_ok=True)
    os.chmod(directory, 0o777)
    dest = os.path.join(directory, os.path.basename(path))
    shutil.copy(path, dest)
    os.chmod(dest, 0o755)
    return dest


# --- Metrics: the exposition, Prometheus and the dashboards (metrics_test, fleet_test) ---------

def dashboard(name):
    """A Grafana dashboard of dashboards/ (name: "threadscope.json"), parsed."""
    for candidate in (os.path.join(HERE, "..", "..", "dashboards"),
                      os.path.join(os.environ.get("TEST_SRCDIR", ""), "__main__", "dashboards")):
        path = os.path.join(candidate, name)
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
    raise RuntimeError("dashboards/%s not found next to the tests" % name)


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def http_text(url):
    """The body, or "" while the server is not answering yet."""
    try:
        return http_get(url)
    except OSError:
        return ""


def series_value(exposition, name, **labels):
    """The value of the first series `name` in a Prometheus text exposition with (at least)
    these labels, or None."""
    for line in exposition.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        if all('%s="%s"' % (k, v) in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def promtool_check(exposition):
    """promtool's complaints about an exposition (names, units, _total, HELP/TYPE); "" if none."""
    r = subprocess.run(["promtool", "check", "metrics"], input=exposition,
                       capture_output=True, text=True)
    return "" if r.returncode == 0 else (r.stdout + r.stderr)


def dashboard_queries(dash):
    """(panel title, query) for every panel query of a dashboard, Grafana's variables filled as
    Grafana fills them for "All" ($__rate_interval: 10s; every other $var: .*)."""
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "10s")
            yield panel["title"], re.sub(r"\$(?!__)(\w+)\b", ".*", expr)


class Prometheus:
    """Debian's Prometheus, scraping one metrics port every second, its HTTP API on a port it
    bound as 0. A context manager: stopped (and its log closed) on exit."""

    def __init__(self, directory, metrics_port):
        self.directory = directory
        config = os.path.join(directory, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: threadscope\n"
                    "    static_configs:\n      - targets: ['127.0.0.1:%d']\n" % metrics_port)
        self.log = open(os.path.join(directory, "prometheus.log"), "w")
        self.proc = subprocess.Popen(
            ["prometheus", "--config.file", config, "--storage.tsdb.path",
             os.path.join(directory, "tsdb"), "--web.listen-address", "127.0.0.1:0"],
            stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: listening_ports(self.proc.pid) or self.proc.poll() is not None,
                     timeout=30, what="Prometheus to listen")
            if self.proc.poll() is not None:
                raise AssertionError("prometheus exited: see %s/prometheus.log" % directory)
        except BaseException:
            self.stop()
            raise
        self.api = "http://127.0.0.1:%d/api/v1/" % listening_ports(self.proc.pid)[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def query(self, expr):
        """The API's whole answer to an instant query (status, data)."""
        return json.loads(http_get(self.api + "query?" + urllib.parse.urlencode({"query": expr})))

    def result(self, expr):
        """The series an instant query returns; [] while Prometheus is not answering yet."""
        try:
            return self.query(expr)["data"]["result"]
        except OSError:
            return []

    def dashboard_failures(self, dash):
        """Every panel query of `dash` that fails or comes back empty, one line each."""
        failures = []
        for title, expr in dashboard_queries(dash):
            body = self.query(expr)
            if body.get("status") != "success":
                failures.append("%s: %s -> %s" % (title, expr, body))
            elif not body["data"]["result"]:
                failures.append("%s: %s -> empty" % (title, expr))
        return failures

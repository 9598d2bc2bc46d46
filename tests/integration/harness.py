"""Shared helpers for the root tier: real BPF, real interpreters, the real CLI and daemon.

Every test leaves nothing attached: BpfTestCase checks after each test that no threadscope
BPF program (names start with ts_) is still loaded.
"""
import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAMS = os.path.join(os.path.dirname(HERE), "programs")
DEBIAN_PYTHON = "/usr/bin/python3.11"
# Every CPython the machine image is meant to have; absent ones are skipped, loudly.
PYENV_VERSIONS = ["2.7.18", "3.6.15", "3.7.16", "3.8.18", "3.9.18", "3.10.13", "3.11.7",
                  "3.12.1", "3.13.0"]


def threadscope():
    return os.environ["THREADSCOPE"]


def threadscoped():
    return os.environ["THREADSCOPED"]


def pyenv_root():
    root = os.environ.get("PYENV_ROOT")
    if root:
        return root
    try:
        return subprocess.check_output(["pyenv", "root"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        # Bazel runs tests without HOME: ask the password database.
        return os.path.join(pwd.getpwuid(os.getuid()).pw_dir, ".pyenv")


def interpreters():
    """(label, path, present, skip_reason) for Debian's python3.11 and each pyenv build."""
    out = [("debian-3.11", DEBIAN_PYTHON, os.access(DEBIAN_PYTHON, os.X_OK),
            DEBIAN_PYTHON + " is missing (tools/install-deps.sh installs it)")]
    root = pyenv_root()
    for v in PYENV_VERSIONS:
        path = os.path.join(root, "versions", v, "bin", "python" + v.rsplit(".", 1)[0])
        out.append(("pyenv-" + v, path, os.access(path, os.X_OK),
                    "pyenv CPython %s is not installed at %s" % (v, path)))
    return out


def leftover_programs():
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True)
    if out.returncode != 0:
        return []
    return sorted(p.get("name", "") for p in json.loads(out.stdout or "[]")
                  if p.get("name", "").startswith("ts_"))


@contextlib.contextmanager
def sleeping_python(seconds=30, python=DEBIAN_PYTHON, **popen_kwargs):
    """A CPython process that does nothing for a while: something to attach to."""
    p = subprocess.Popen([python, "-c", "import time; time.sleep(%d)" % seconds], **popen_kwargs)
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


class BpfTestCase(unittest.TestCase):
    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("the BPF tier needs root")
        self.assertEqual(leftover_programs(), [], "BPF programs left over from before this test")
        self.tmp = tempfile.TemporaryDirectory(prefix="ts_it_")

    def tearDown(self):
        # Links are file descriptors: when every threadscope process is gone, so is every probe.
        wait_for(lambda: not leftover_programs(), timeout=10, what="BPF programs to unload")
        self.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def for_each_interpreter(self, body, only=None):
        """Runs body(label, python) per interpreter (or those labelled in `only`) as subtests;
        skips absent pyenv builds, fails when Debian's is missing."""
        ran = 0
        for label, python, present, reason in interpreters():
            if only is not None and label not in only:
                continue
            with self.subTest(interpreter=label):
                if not present:
                    if label.startswith("debian"):
                        self.fail(reason)
                    sys.stderr.write("SKIP %s: %s\n" % (label, reason))
                    continue
                body(label, python)
                ran += 1
        self.assertGreater(ran, 0)


def main():
    unittest.main(verbosity=2)


NOBODY = 65534


def as_nobody():
    """preexec_fn: drop to nobody:nogroup (the group that may use the test daemons' sockets)."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


class Daemon:
    """threadscoped on a Unix socket of its own inside `directory`, group `nogroup` (so that
    unprivileged test users may connect); stopped with SIGTERM on exit."""

    def __init__(self, directory, *args, prefix=()):
        os.chmod(directory, 0o755)  # unprivileged clients reach the socket through it
        self.sock = os.path.join(directory, "threadscope.sock")
        self.address = "unix:" + self.sock
        self.log_path = os.path.join(directory, "daemon.log")
        self.args = [threadscoped(), "--socket", self.sock, "--socket-group",
                     "nogroup"] + list(args)
        self.prefix = list(prefix)
        self.proc = None

    def __enter__(self):
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.prefix + self.args, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_for(lambda: os.path.exists(self.sock) or self.proc.poll() is not None,
                 what="the daemon's socket")
        if self.proc.poll() is not None:
            raise AssertionError("threadscoped exited: " + self.read_log())
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def alive(self):
        return self.proc.poll() is None

    def read_log(self):
        with open(self.log_path) as f:
            return f.read()

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


def copy_for_nobody(path, directory):
    """A copy of an executable that nobody may run, in a directory nobody may enter."""
    os.makedirs(directory, exist_ok=True)
    os.chmod(directory, 0o777)
    dest = os.path.join(directory, os.path.basename(path))
    shutil.copy(path, dest)
    os.chmod(dest, 0o755)
    return dest

"""threadscoped as a root service facing hostile clients and hostile targets (docs/DESIGN.md §7).

Every scenario of the security review that a group member can set up is here: capabilities
from a user namespace, a connection handed over after a setuid exec, grants on a reused pid, a
label that crashed the daemon, a FIFO or a sparse file in place of the executable, a patched
ELF, a client that never reads, a hundred clients, running out of descriptors, terminal
escapes, shared sessions and pid namespaces. The daemon must keep serving through all of them,
and each bad request must get one clear answer."""
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import threading
import time

import harness

RAW_CLIENT = sys.argv.pop(1) if len(sys.argv) > 1 else None
PY = harness.DEBIAN_PYTHON
SLEEP = "import time; time.sleep(120)"


class SecurityTest(harness.BpfTestCase):
    def setUp(self):
        super().setUp()
        self.assertIsNotNone(RAW_CLIENT)
        self.bin = self.path("bin")
        self.daemon = harness.Daemon(self.tmp.name).__enter__()
        self.children = []

    def tearDown(self):
        for p in self.children:
            if p.poll() is None:
                p.kill()
            p.wait()
        self.daemon.__exit__(None, None, None)
        super().tearDown()

    # ------------------------------------------------------------------ helpers

    def spawn(self, args, nobody=False, **kwargs):
        p = subprocess.Popen(args, preexec_fn=harness.as_nobody if nobody else None, **kwargs)
        self.children.append(p)
        return p

    def nobody_copy(self, path):
        return harness.copy_for_nobody(path, self.bin)

    def raw(self, *args, nobody=False, timeout=60):
        raw = self.nobody_copy(RAW_CLIENT) if nobody else RAW_CLIENT
        return harness.run([raw, self.daemon.sock] + [str(a) for a in args],
                           preexec_fn=harness.as_nobody if nobody else None, timeout=timeout)

    def cli(self, *args, nobody=False, timeout=60, **kwargs):
        cli = self.nobody_copy(harness.threadscope()) if nobody else harness.threadscope()
        return harness.run([cli, "--server", self.daemon.address] + [str(a) for a in args],
                           preexec_fn=harness.as_nobody if nobody else None, timeout=timeout,
                           **kwargs)

    def assertServing(self):
        self.assertTrue(self.daemon.alive(), "threadscoped died:\n" + self.daemon.read_log())
        r = self.cli("status")
        self.assertEqual(r.returncode, 0, r.stderr)
        with harness.sleeping_python() as other:
            r = self.cli("attach", "-d", "0.5s", "--no-live", other.pid, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)

    def nobody_dir(self, name):
        d = self.path(name)
        os.makedirs(d, exist_ok=True)
        os.chown(d, harness.NOBODY, harness.NOBODY)
        os.chmod(self.tmp.name, 0o755)
        return d

    def python_copy(self, directory):
        exe = os.path.join(directory, "python3.11")
        shutil.copy(PY, exe)
        os.chown(exe, harness.NOBODY, harness.NOBODY)
        os.chmod(exe, 0o755)
        return exe

    def spawn_with_pid(self, wanted, args):
        """Starts `args` with pid `wanted` (the kernel hands out ns_last_pid + 1)."""
        for _ in range(50):
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(wanted - 1))
            p = subprocess.Popen(args)
            if p.pid == wanted:
                self.children.append(p)
                return p
            p.kill()
            p.wait()
        self.fail("could not get pid %d back" % wanted)

    # ------------------------------------------------------------------ who may trace what

    def test_capabilities_in_a_user_namespace_grant_nothing(self):
        cli = self.nobody_copy(harness.threadscope())
        with harness.sleeping_python() as root_python:
            r = harness.run(["unshare", "-Ur", "grep", "CapEff", "/proc/self/status"],
                            preexec_fn=harness.as_nobody)
            self.assertEqual(r.returncode, 0, "unprivileged user namespaces are needed: " + r.stderr)
            self.assertNotIn("0000000000000000", r.stdout)  # full capabilities, in its namespace
            r = harness.run(["unshare", "-Ur", cli, "--server", self.daemon.address, "attach",
                             "-d", "1s", "--no-live", str(root_python.pid)],
                            preexec_fn=harness.as_nobody)
            self.assertEqual(r.returncode, 5, r.stdout + r.stderr)
            self.assertIn("may not trace pid %d" % root_python.pid, r.stderr)
        self.assertServing()

    def test_a_connection_keeps_the_credentials_of_its_connect(self):
        """Connect as nobody, then exec a setuid program (same pid, euid 0, full CapEff) while a
        child keeps using the connection: still nobody's."""
        raw = self.nobody_copy(RAW_CLIENT)
        relay = os.path.join(self.bin, "relay.py")
        with open(relay, "w") as f:
            f.write(
                "import os, socket, sys, time\n"
                "sock, raw, pid = sys.argv[1:4]\n"
                "s = socket.socket(socket.AF_UNIX)\n"
                "s.connect(sock)\n"
                "os.set_inheritable(s.fileno(), True)\n"
                "r, w = os.pipe()\n"
                "if os.fork() == 0:\n"
                "    os.close(r)\n"
                "    time.sleep(2)  # by then the parent is passwd: euid 0\n"
                "    os.execv(raw, [raw, 'fd:%d' % s.fileno(), 'attach', pid])\n"
                "os.dup2(r, 0)  # w stays open in the child: passwd waits for a password\n"
                "os.execv('/usr/bin/passwd', ['passwd'])\n")
        os.chmod(relay, 0o644)
        with harness.sleeping_python() as root_python:
            p = self.spawn([PY, relay, self.daemon.sock, raw, str(root_python.pid)], nobody=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            deadline = time.time() + 30
            status_line = None
            while time.time() < deadline and status_line is None:
                line = p.stdout.readline()
                m = re.search(r"(OK|PERMISSION_DENIED|NOT_FOUND|[A-Z_]+) ", line)
                if m and m.group(1) in ("OK", "PERMISSION_DENIED", "NOT_FOUND", "UNAVAILABLE"):
                    status_line = line
            p.kill()
            self.assertIsNotNone(status_line, "the relay never answered")
            self.assertTrue(status_line.startswith("PERMISSION_DENIED"), status_line)
        self.assertServing()

    def test_a_reused_pid_inherits_no_grants(self):
        own = self.spawn([PY, "-c", SLEEP], nobody=True)
        time.sleep(0.3)
        r = self.raw("attach", own.pid, nobody=True)
        self.assertTrue(r.stdout.startswith("OK"), r.stdout + r.stderr)
        own_id = r.stdout.split("target_id=")[1].strip()
        # Its connection closed with the raw client: the lease is gone, the trace ends.
        harness.wait_for(lambda: own_id not in self.raw("list").stdout, timeout=20,
                         what="nobody's trace to end with its client")
        own.kill()
        own.wait()
        victim = self.spawn_with_pid(own.pid, [PY, "-c", SLEEP])
        time.sleep(0.3)
        root_cli = harness.start_attach(victim.pid, "-d", "60s", server=self.daemon.address)
        self.children.append(root_cli)
        listed = self.raw("list").stdout
        root_id = re.search(r"pid:%d:\d+" % victim.pid, listed).group(0)
        self.assertNotEqual(root_id, own_id)
        # nobody sees nothing of it, by any id it could try.
        self.assertIn("targets=0", self.raw("list", nobody=True).stdout)
        for guess in (root_id, own_id, "pid:%d" % victim.pid):
            r = self.raw("snapshot", guess, nobody=True)
            self.assertTrue(r.stdout.startswith("NOT_FOUND"), guess + ": " + r.stdout)
        self.assertServing()

    # ------------------------------------------------------------------ bad requests

    def test_a_huge_label_is_refused_not_fatal(self):
        with harness.sleeping_python() as target:
            for size in (120000, 8 << 20):
                r = self.raw("attach", target.pid, "--label-name-bytes", size)
                self.assertTrue(r.stdout.startswith("INVALID_ARGUMENT"), r.stdout[:200])
                self.assertIn("label", r.stdout)
                self.assertTrue(self.daemon.alive())
            r = self.raw("attach", target.pid, "--ring", 1 << 30, nobody=True)
            self.assertRegex(r.stdout, "^(INVALID_ARGUMENT|PERMISSION_DENIED)")
        r = self.cli("attach", "--label", "x" * 100000 + "=1", "1")
        self.assertEqual(r.returncode, 2)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertServing()

    # ------------------------------------------------------------------ hostile targets

    def test_a_fifo_in_place_of_the_deleted_executable_hangs_nothing(self):
        d = self.nobody_dir("fifo")
        exe = self.python_copy(d)
        target = self.spawn([exe, "-c", SLEEP], nobody=True)
        time.sleep(0.5)
        os.unlink(exe)
        os.mkfifo(exe)
        os.chown(exe, harness.NOBODY, harness.NOBODY)
        started = time.time()
        r = self.cli("attach", "-d", "1s", "--no-live", target.pid, nobody=True, timeout=60)
        self.assertLess(time.time() - started, 30)
        # The running image is still there behind /proc/PID/exe: traced from it, not from the
        # path somebody put a FIFO at.
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertServing()

    def test_a_sparse_many_gib_executable_costs_no_memory(self):
        d = self.nobody_dir("sparse")
        exe = self.python_copy(d)
        os.truncate(exe, 16 << 30)
        target = self.spawn([exe, "-c", SLEEP], nobody=True)
        time.sleep(0.5)
        started = time.time()
        r = self.cli("attach", "-d", "1s", "--no-live", target.pid, nobody=True, timeout=60)
        self.assertLess(time.time() - started, 30)
        self.assertIn(r.returncode, (0, 9), r.stderr)  # traced, or refused in one line (a limit)
        if r.returncode != 0:
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertLess(self.daemon.rss_kib(), 512 * 1024)
        self.assertServing()

    def test_a_patched_elf_is_parsed_in_bounded_time(self):
        d = self.nobody_dir("patched")
        exe = self.python_copy(d)
        with open(exe, "r+b") as f:
            b = bytearray(f.read())
            shoff, = struct.unpack_from("<Q", b, 0x28)
            shnum, shstrndx = struct.unpack_from("<HH", b, 0x3c)
            stroff, = struct.unpack_from("<Q", b, shoff + shstrndx * 64 + 0x18)
            patched = 0
            for i in range(shnum):
                h = shoff + i * 64
                name, = struct.unpack_from("<I", b, h)
                if bytes(b[stroff + name:stroff + name + 6]) in (b".data\0",):
                    struct.pack_into("<Q", b, h + 0x20, 1 << 62)  # sh_size
                    patched += 1
            self.assertEqual(patched, 1)
            f.seek(0)
            f.write(b)
        target = self.spawn([exe, "-c", SLEEP], nobody=True)
        time.sleep(0.5)
        self.assertIsNone(target.poll(), "the patched copy should still run")
        started = time.time()
        r = self.cli("attach", "-d", "1s", "--no-live", target.pid, nobody=True, timeout=90)
        self.assertLess(time.time() - started, 45, r.stderr)
        self.assertIn(r.returncode, (0, 4, 8), r.stderr)
        self.assertServing()

    def test_terminal_escapes_from_the_target_never_reach_the_terminal(self):
        prog = self.path("escapes.py")
        with open(prog, "w") as f:
            f.write(
                "import ctypes, threading, time\n"
                "lock = threading.Lock()\n"
                "def work():\n"
                "    ctypes.CDLL(None).prctl(15, b'\\x1b]0;pwned\\x07\\x1b[2J', 0, 0, 0)\n"
                "    end = time.time() + 6\n"
                "    while time.time() < end:\n"
                "        with lock:\n"
                "            time.sleep(0.002)\n"
                "work.__code__ = work.__code__.replace(co_qualname='\\x1b[2J\\x1b[HALL GOOD',\n"
                "                                      co_name='\\x1b[8m')\n"
                "ts = [threading.Thread(target=work) for _ in range(3)]\n"
                "[t.start() for t in ts]\n"
                "[t.join() for t in ts]\n")
        target = self.spawn([PY, prog])
        time.sleep(1)
        r = self.cli("attach", "-d", "3s", "--no-live", target.pid, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout + r.stderr
        self.assertIn("\\x1b", out)  # the names are shown, escaped
        for bad in ("\x1b", "\x07", "\x9b"):
            self.assertNotIn(bad, out)

    # ------------------------------------------------------------------ resources

    def test_a_client_that_never_reads_costs_bounded_memory(self):
        prog = self.path("busy.py")
        with open(prog, "w") as f:
            f.write("import threading, time, os\n"
                    "def spin():\n"
                    "    end = time.time() + 40\n"
                    "    while time.time() < end:\n"
                    "        os.stat('/')\n"
                    "ts = [threading.Thread(target=spin) for _ in range(3)]\n"
                    "[t.start() for t in ts]\n"
                    "[t.join() for t in ts]\n")
        target = self.spawn([PY, prog])
        time.sleep(0.5)
        cli = harness.start_attach(target.pid, "-d", "40s", server=self.daemon.address)
        self.children.append(cli)
        target_id = re.search(r"pid:%d:\d+" % target.pid, self.raw("list").stdout).group(0)
        before = self.daemon.rss_kib()
        stallers = [self.spawn([RAW_CLIENT, self.daemon.sock, "stall", target_id, "20"],
                               stdout=subprocess.PIPE, text=True) for _ in range(4)]
        for s in stallers:
            self.assertIn("READING", s.stdout.readline())
        records = []
        for _ in range(3):
            time.sleep(4)
            m = re.search(r"records=(\d+)", self.raw("snapshot", target_id).stdout)
            records.append(int(m.group(1)))
        # Tracing goes on (no stall of the consumer), memory does not follow the backlog.
        self.assertLess(records[0], records[1])
        self.assertLess(records[1], records[2])
        self.assertLess(self.daemon.rss_kib() - before, 300 * 1024)
        self.assertServing()

    def test_a_hundred_clients_at_once(self):
        holders = [self.spawn([RAW_CLIENT, self.daemon.sock, "hold", "8"],
                              stdout=subprocess.DEVNULL) for _ in range(100)]
        results = []

        def status():
            results.append(self.cli("status", timeout=60).returncode)

        threads = [threading.Thread(target=status) for _ in range(20)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        self.assertEqual(results, [0] * 20)
        for h in holders:
            h.wait(timeout=60)
        self.assertServing()

    def test_running_out_of_descriptors_does_not_spin(self):
        self.daemon.__exit__(None, None, None)
        self.daemon = harness.Daemon(self.tmp.name, prefix=["prlimit", "--nofile=96:96", "--"])
        self.daemon.__enter__()
        holders = [self.spawn([RAW_CLIENT, self.daemon.sock, "hold", "6"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for _ in range(150)]
        time.sleep(1.5)
        cpu = self.daemon.cpu_seconds()
        time.sleep(3)
        self.assertLess(self.daemon.cpu_seconds() - cpu, 1.0, "the accept loop spins")
        for h in holders:
            h.wait(timeout=60)
        self.assertTrue(self.daemon.alive())
        harness.wait_for(lambda: self.cli("status").returncode == 0, timeout=20,
                         what="the daemon to serve again")

    # ------------------------------------------------------------------ sessions

    def test_a_clients_detach_ends_only_its_own_lease(self):
        target = self.spawn([PY, "-c", SLEEP])
        time.sleep(0.3)
        first = harness.start_attach(target.pid, "-d", "30s", server=self.daemon.address)
        self.children.append(first)
        r = self.cli("attach", "-d", "1s", "--no-live", "--locks", "all", target.pid)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("already traced", r.stderr)  # the second client is told what it got
        time.sleep(1)
        self.assertIn("pid:%d:" % target.pid, self.raw("list").stdout)  # still traced
        self.assertNotEqual(harness.leftover_programs(), [])
        first.send_signal(signal.SIGINT)
        self.assertEqual(first.wait(timeout=30), 0)
        harness.wait_for(lambda: "pid:%d:" % target.pid not in self.raw("list").stdout,
                         what="the trace to end with its last lease")

    def test_a_client_in_another_pid_namespace_names_its_own_pids(self):
        script = self.path("inner.sh")
        with open(script, "w") as f:
            f.write("#!/bin/sh\n"
                    "%s -c 'import time; time.sleep(30)' &\n"
                    "sleep 0.5\n"
                    "%s --server %s attach -d 1s --no-live -o json $! > %s\n"
                    "echo own=$?\n"
                    "%s --server %s attach -d 1s --no-live %d\n"
                    "echo host=$?\n"
                    "kill %%1\n" % (PY, harness.threadscope(), self.daemon.address,
                                    self.path("inner.json"), harness.threadscope(),
                                    self.daemon.address, self.daemon.proc.pid))
        os.chmod(script, 0o755)
        r = harness.run(["unshare", "--pid", "--fork", "--mount-proc", script], timeout=120)
        self.assertIn("own=0", r.stdout, r.stderr)
        self.assertIn("host=3", r.stdout, r.stderr)  # a host pid it cannot see: no such process
        rep = harness.load_json(self.path("inner.json"))
        self.assertNotEqual(rep["target"]["pid"], rep["target"]["ns_pid"])
        self.assertServing()


if __name__ == "__main__":
    harness.main()

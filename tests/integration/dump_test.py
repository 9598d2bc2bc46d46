"""threadscope dump, on every interpreter of the matrix: a program that hangs every way
(tests/programs/hang.py) is explained from the live process and from gcore's core file, and the
explanation matches the ground truth the program wrote: each thread's state, the line it waits
at, what it waits for, who holds that and how it is known, and the deadlock. No BPF is loaded;
the harness still checks that none is left (the root tier shares one machine-wide lock).

Bad input gets one line and its own exit code: no such pid, not CPython, no permission, a core
without its executable, an executable that does not match the core, not a core, a process that
exits during the dump.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import harness

HANG = os.path.join(harness.PROGRAMS, "hang.py")
NOBODY = 65534


class DumpTest(harness.BpfTestCase):
    def ts(self, *args, **kwargs):
        kwargs.setdefault("timeout", 120)
        return harness.run([harness.threadscope()] + list(args), **kwargs)

    def dump_json(self, *args):
        r = self.ts("dump", *(list(args) + ["-o", "json"]))
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def start_hang(self, interp):
        truth_path = self.path(interp.label + ".truth")
        p = interp.popen([HANG, truth_path], stdout=subprocess.DEVNULL)
        try:
            harness.wait_for(lambda: os.path.exists(truth_path), timeout=60,
                             what="%s to write its ground truth" % interp.label)
        except AssertionError:
            p.kill()
            p.wait()
            raise
        return p, harness.load_json(truth_path)

    def check(self, d, truth, interp, source):
        where = "%s (%s)" % (interp.label, source)
        tids, lines, locks, objects = truth["tids"], truth["lines"], truth["locks"], truth["objects"]
        version = tuple(int(x) for x in truth["version"].split("."))
        threads = {t["native_tid"]: t for t in d["threads"]}
        self.assertEqual(d["target"]["pid"], truth["pid"], where)
        self.assertEqual(d["target"]["source"], source, where)
        if source == "live":
            self.assertGreater(d["pause_ns"], 0, where)
        else:
            self.assertIsNone(d["pause_ns"], where)
        for name, tid in tids.items():
            self.assertIn(tid, threads, "%s: thread %s (%d) missing" % (where, name, tid))
        free_threaded = d["target"]["free_threaded"]

        def t(name):
            return threads[tids[name]]

        def at_line(thread, key, what):
            self.assertIsNotNone(thread["wait_at"], "%s: %s has no wait line" % (where, what))
            self.assertEqual(thread["wait_at"]["file"], truth["file"], "%s: %s" % (where, what))
            self.assertEqual(thread["wait_at"]["line"], lines[key], "%s: %s" % (where, what))

        for name in tids:
            if name != "MainThread":
                self.assertEqual(t(name)["name"], name, where)
            self.assertEqual(t(name)["holds_gil"], None if free_threaded else False,
                             "%s: %s" % (where, name))

        # The deadlock: each side waits for the other's lock, taken by `with`.
        for me, other, want, have, wait_key in (("deadlock-a", "deadlock-b", "B", "A", "a_waits_b"),
                                                ("deadlock-b", "deadlock-a", "A", "B", "b_waits_a")):
            th = t(me)
            what = "%s waits for %s" % (me, want)
            self.assertEqual(th["state"], "lock_wait", "%s: %s" % (where, what))
            w = th["waiting_for"]
            self.assertEqual(w["kind"], "lock", "%s: %s" % (where, what))
            self.assertEqual(w["lock_id"], locks[want], "%s: %s" % (where, what))
            self.assertEqual(w["owner_native_tid"], tids[other], "%s: %s" % (where, what))
            self.assertEqual(w["owner_source"], "with_statement", "%s: %s" % (where, what))
            at_line(th, wait_key, what)
            self.assertIn(locks[have], th["holds"], "%s: %s holds %s" % (where, me, have))
        self.assertEqual(len(d["deadlocks"]), 1, where)
        dl = d["deadlocks"][0]
        self.assertEqual(sorted(dl["threads"]), sorted([tids["deadlock-a"], tids["deadlock-b"]]),
                         where)
        self.assertEqual(sorted(dl["locks"]), sorted([locks["A"], locks["B"]]), where)
        taken = {dl["locks"][i]: dl["taken_at"][i] for i in range(len(dl["locks"]))}
        self.assertEqual(taken[locks["A"]]["line"], lines["a_takes_a"], where)
        self.assertEqual(taken[locks["B"]]["line"], lines["b_takes_b"], where)

        # The RLock held across an Event wait, and the thread queued on it.
        holder, waiter = t("rlock-holder"), t("rlock-waiter")
        self.assertEqual(holder["state"], "condition_wait", where)
        self.assertEqual(holder["waiting_for"]["kind"], "event", where)
        self.assertEqual(holder["waiting_for"]["object_id"], objects["never"], where)
        self.assertIsNone(holder["waiting_for"]["owner_native_tid"], where)
        at_line(holder, "holder_waits_event", "rlock-holder waits on the Event")
        self.assertIn(locks["R"], holder["holds"], where)
        self.assertEqual(waiter["state"], "lock_wait", where)
        self.assertEqual(waiter["waiting_for"]["kind"], "rlock", where)
        self.assertEqual(waiter["waiting_for"]["lock_id"], locks["R"], where)
        self.assertEqual(waiter["waiting_for"]["owner_native_tid"], tids["rlock-holder"], where)
        self.assertEqual(waiter["waiting_for"]["owner_source"], "rlock_owner", where)
        at_line(waiter, "waiter_waits_r", "rlock-waiter waits for R")

        # A join on a stuck thread.
        stuck, joiner = t("stuck"), t("joiner")
        self.assertEqual(stuck["state"], "condition_wait", where)
        self.assertEqual(stuck["waiting_for"]["kind"], "event", where)
        self.assertEqual(stuck["waiting_for"]["object_id"], objects["stuck_event"], where)
        at_line(stuck, "stuck_waits", "stuck waits on its Event")
        self.assertEqual(joiner["state"], "join_wait", where)
        self.assertEqual(joiner["waiting_for"]["kind"], "join", where)
        self.assertEqual(joiner["waiting_for"]["owner_native_tid"], tids["stuck"], where)
        self.assertEqual(joiner["waiting_for"]["owner_source"],
                         "thread_object" if version < (3, 0)
                         else "thread_handle" if version >= (3, 13) else "sentinel", where)
        self.assertEqual(joiner["waiting_for"]["object_id"], objects["stuck_thread"], where)
        at_line(joiner, "joins", "joiner joins stuck")

        # A Condition nobody notifies: inside `with C:`, but the wait released C's lock.
        cond = t("cond-waiter")
        self.assertEqual(cond["state"], "condition_wait", where)
        self.assertEqual(cond["waiting_for"]["kind"], "condition", where)
        self.assertEqual(cond["waiting_for"]["object_id"], objects["C"], where)
        self.assertEqual(cond["holds"], [], where)
        at_line(cond, "cond_waits", "cond-waiter waits on C")

        # A Lock taken by an explicit acquire(): no field records it; the one frame holding it
        # in a global and calling acquire() is named, as an inference (never a deadlock edge).
        aholder, awaiter = t("acquire-holder"), t("acquire-waiter")
        self.assertEqual(aholder["state"], "condition_wait", where)
        at_line(aholder, "acquire_holder_waits", "acquire-holder waits on the Event")
        self.assertIn(locks["L2"], aholder["holds"], where)
        self.assertEqual(awaiter["state"], "lock_wait", where)
        self.assertEqual(awaiter["waiting_for"]["lock_id"], locks["L2"], where)
        self.assertEqual(awaiter["waiting_for"]["owner_native_tid"], tids["acquire-holder"],
                         where)
        self.assertEqual(awaiter["waiting_for"]["owner_source"], "acquire_call", where)
        at_line(awaiter, "acquire_waiter_waits", "acquire-waiter waits for L2")

        # The sleepers.
        for name in ("sleeper", "MainThread"):
            self.assertEqual(t(name)["state"], "sleeping", "%s: %s" % (where, name))
            self.assertIsNone(t(name)["waiting_for"], where)
        self.assertEqual(t("sleeper")["stack"][0]["line"], lines["sleeps"], where)
        self.assertTrue(t("MainThread")["main"], where)

    def test_hang_live_and_from_gcore(self):
        def body(interp):
            p, truth = self.start_hang(interp)
            pid = truth["pid"]
            try:
                d = self.dump_json(str(pid))
                self.check(d, truth, interp, "live")
                text = self.ts("dump", str(pid))
                self.assertEqual(text.returncode, 0, text.stderr)
                self.assertIn("DEADLOCK: ", text.stdout)
                self.assertIn(truth["locks"]["A"], text.stdout)
                prefix = self.path(interp.label + ".core")
                g = harness.run(["gcore", "-o", prefix, str(pid)], timeout=300)
                self.assertEqual(g.returncode, 0, g.stderr[-2000:])
            finally:
                p.kill()
                p.wait()
            core = "%s.%d" % (prefix, pid)
            try:
                d = self.dump_json("--core", core, "--exe", interp.binary)
                self.check(d, truth, interp, "core")
            finally:
                os.unlink(core)
        self.for_each_interpreter(body)

    def test_nonblocking(self):
        def body(interp):
            p, truth = self.start_hang(interp)
            try:
                d = self.dump_json(str(truth["pid"]), "--nonblocking")
                self.check(d, truth, interp, "live-nonblocking")
                self.assertGreaterEqual(d["reads"], 2)
            finally:
                p.kill()
                p.wait()
        self.for_each_interpreter(body, kinds=harness.CORE)

    def test_locals_and_native_frames(self):
        def body(interp):
            p, truth = self.start_hang(interp)
            try:
                d = self.dump_json(str(truth["pid"]), "--locals", "--native")
            finally:
                p.kill()
                p.wait()
            threads = {t["native_tid"]: t for t in d["threads"]}
            holder = threads[truth["tids"]["rlock-holder"]]
            names = {l["name"]: l for l in holder["locals"]}
            # The innermost frame is Condition.wait(self, timeout=None).
            self.assertIn("self", names)
            self.assertEqual(names["self"]["type"], "Condition")
            self.assertEqual(names["timeout"]["value"], "None")
            for t in d["threads"]:
                self.assertTrue(t["native"], "thread %d has no native frame" % t["native_tid"])
                # Every thread sleeps in a system call: its pc is in libc.
                self.assertTrue(t["native"][0]["binary"].startswith("libc"), t["native"][0])
        self.for_each_interpreter(body, kinds=harness.CORE)

    def one_line_error(self, r, code, *words):
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        self.assertEqual(r.returncode, code, r.stderr)
        self.assertEqual(len(lines), 1, r.stderr)
        for w in words:
            self.assertIn(w, lines[0])

    def test_bad_input(self):
        # No such process.
        self.one_line_error(self.ts("dump", "999999999"), 3, "999999999")
        # Not CPython.
        sleeper = subprocess.Popen(["sleep", "60"])
        try:
            time.sleep(0.1)
            self.one_line_error(self.ts("dump", str(sleeper.pid)), 4, "not CPython")
        finally:
            sleeper.kill()
            sleeper.wait()
        # No permission: nobody may not ptrace root's process (copy of the CLI nobody can run).
        os.chmod(self.tmp.name, 0o755)
        cli = os.path.join(self.tmp.name, "threadscope")
        shutil.copy(harness.threadscope(), cli)
        os.chmod(cli, 0o755)
        with harness.sleeping_python() as target:
            r = subprocess.run([cli, "dump", str(target.pid)], capture_output=True, text=True,
                               timeout=60,
                               preexec_fn=lambda: (os.setgid(NOBODY), os.setuid(NOBODY)))
            self.one_line_error(r, 5)
        # Cores: one from Debian's python3.11 (on the host, so it has every page).
        with harness.sleeping_python() as target:
            prefix = self.path("sleep.core")
            g = harness.run(["gcore", "-o", prefix, str(target.pid)], timeout=300)
            self.assertEqual(g.returncode, 0, g.stderr[-2000:])
            core = "%s.%d" % (prefix, target.pid)
        ok = self.dump_json("--core", core)  # the executable the core names exists here
        self.assertEqual(ok["target"]["python_version"], harness.matrix.find("debian-3.11")
                         .reported_version())
        self.one_line_error(self.ts("dump", "--core", core, "--exe", "/nonexistent/python"), 12,
                            "/nonexistent/python")
        other = self.other_python()
        if other:
            self.one_line_error(self.ts("dump", "--core", core, "--exe", other), 13, "build-id")
        self.one_line_error(self.ts("dump", "--core", "/etc/passwd"), 11, "not an ELF")
        self.one_line_error(self.ts("dump", "--core", self.path("missing.core")), 11, "no core")
        cut = self.path("cut.core")
        with open(core, "rb") as f, open(cut, "wb") as out:
            out.write(f.read(os.path.getsize(core) // 2))
        self.one_line_error(self.ts("dump", "--core", cut), 11, "truncated")
        os.unlink(core)
        # A core of a process whose executable is not here.
        # (The Debian unstable root's interpreters are not on the host: their cores name
        # /usr/bin/python3.1x, which the host does not have.)
        self.one_line_error(self.ts("dump", "--exe", "/usr/bin/python3.11", "1"), 2)
        self.one_line_error(self.ts("dump"), 2)

    def other_python(self):
        for interp in harness.interpreters():
            if interp.present and interp.label != "debian-3.11" and interp.root is None:
                return interp.binary
        return None

    def test_core_without_its_executable(self):
        def body(interp):
            with harness.sleeping_python(interp=interp) as target:
                prefix = self.path(interp.label + ".core")
                g = harness.run(["gcore", "-o", prefix, str(target.pid)], timeout=300)
                self.assertEqual(g.returncode, 0, g.stderr[-2000:])
            core = "%s.%d" % (prefix, target.pid)
            try:
                self.one_line_error(self.ts("dump", "--core", core), 12, "--exe")
                d = self.dump_json("--core", core, "--exe", interp.binary)
                self.assertEqual(d["threads"][0]["state"], "sleeping")
            finally:
                os.unlink(core)
        self.for_each_interpreter(body, kinds=("debian-unstable",))

    def test_process_exiting_during_the_dump(self):
        # A watcher at real-time priority kills the target the moment a tracer appears in its
        # status (our PTRACE_SEIZE of its main thread): the process dies between the first
        # seize and the end of the dump. One line, exit code 7; nothing hangs.
        watcher = (
            "import os, signal, sys\n"
            "pid = int(sys.argv[1])\n"
            "while True:\n"
            "    try:\n"
            "        with open('/proc/%d/status' % pid) as f:\n"
            "            status = f.read()\n"
            "    except OSError:\n"
            "        break\n"
            "    if 'TracerPid:\\t0\\n' not in status:\n"
            "        os.kill(pid, signal.SIGKILL)\n"
            "        break\n")
        outcomes = []
        for _ in range(5):
            guard = None
            target = subprocess.Popen([harness.DEBIAN_PYTHON, "-c",
                                       "import threading, time\n"
                                       "for _ in range(100):\n"
                                       "    threading.Thread(target=time.sleep, args=(600,),"
                                       " daemon=True).start()\n"
                                       "time.sleep(600)\n"])
            try:
                harness.wait_for(lambda: len(os.listdir("/proc/%d/task" % target.pid)) >= 101,
                                 timeout=30, what="the target's threads")
                guard = subprocess.Popen(["chrt", "-f", "50", harness.DEBIAN_PYTHON, "-c",
                                          watcher, str(target.pid)])
                r = self.ts("dump", str(target.pid))
                outcomes.append(r.returncode)
                if r.returncode != 0:
                    self.one_line_error(r, 7, "exited")
            finally:
                target.kill()
                target.wait()
                if guard:
                    guard.wait(timeout=30)
        self.assertIn(7, outcomes)


if __name__ == "__main__":
    harness.main()

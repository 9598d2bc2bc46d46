"""Lock tracing on every interpreter, in both modes: the report and the event stream match what
tests/programs/locks.py says it did, and a real deadlock is reported while it is happening."""
import json
import os
import signal
import subprocess
import time

import harness


def lock_at(report, address):
    """The lock whose object lives at `address` at the end of the run. Addresses are reused as
    the program frees and allocates locks, so the newest lock there is the program's."""
    found = [l for l in report["locks"] if l["address"] == address]
    if not found:
        return None
    return max(found, key=lambda l: l["created_ns"] if l["created_ns"] is not None else -1)


def read_events(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def lock_events(events, lock_id, change=None):
    return [e for e in events if e["type"] == "lock" and e["lock_id"] == lock_id
            and (change is None or e["change"] == change)]


class LocksTest(harness.BpfTestCase):
    def trace(self, interp, mode):
        label = interp.label
        truth_path = self.path("%s.%s.truth" % (label, mode))
        report_path = self.path("%s.%s.json" % (label, mode))
        events_path = self.path("%s.%s.jsonl" % (label, mode))
        r = harness.run([harness.threadscope(), "run", "--locks", mode, "--report", report_path,
                         "--events", events_path, "--"] + interp.argv +
                        [os.path.join(harness.PROGRAMS, "locks.py"), truth_path], timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        report = harness.load_json(report_path)
        self.assertEqual(report["stats"]["drops"], 0)
        self.assertEqual(report["target"]["lock_mode"], mode)
        for probe in report["probes"]:
            if probe["required"]:
                self.assertTrue(probe["attached"], "%s: %s" % (probe["name"], probe["reason"]))
        return harness.load_json(truth_path), report, read_events(events_path)

    def check_contention(self, truth, report, events, exact):
        where = "barrier"
        b = truth["barrier"]
        lock = lock_at(report, b["lock"])
        self.assertIsNotNone(lock, where)
        self.assertEqual(lock["kind"], "Lock", where)
        self.assertEqual(lock["contended"], 2, where)
        self.assertEqual(lock["timeouts"], 0, where)
        self.assertEqual(lock["wait_histogram"]["count"], 2, where)
        ends = lock_events(events, lock["id"], "wait_end")
        self.assertEqual(sorted(e["native_tid"] for e in ends), sorted(b["waiters"]), where)
        self.assertTrue(all(e["acquired"] and e["wait_kind"] == "lock" for e in ends), where)
        # The holder slept 1 s holding it; the first waiter in waited most of that, and was
        # handed the lock by the holder. The second got it from the first (or the holder).
        first = min(ends, key=lambda e: e["ts_ns"])
        self.assertEqual(first["other_native_tid"], b["holder"], where)
        self.assertGreater(first["wait_ns"], 100_000_000, where)
        self.assertIn(max(ends, key=lambda e: e["ts_ns"])["other_native_tid"],
                      [b["holder"], first["native_tid"]], where)
        begins = lock_events(events, lock["id"], "wait_begin")
        self.assertEqual(len(begins), 2, where)
        # Where: both waited at the `with contended:` line of waiter(); the lock was made at
        # module level. The stack goes on into threading.py's bootstrap.
        wait_at = "%s:%d waiter" % (truth["file"], b["wait_line"])
        self.assertEqual(lock["first_contended_at"]["where"], wait_at, where)
        self.assertEqual([e["stack"]["where"] for e in begins], [wait_at] * 2, where)
        frames = begins[0]["stack"]["frames"]
        self.assertTrue(any(f["file"].endswith("threading.py") for f in frames[1:]), frames)
        self.assertEqual(lock["created_at"]["where"],
                         "%s:%d <module>" % (truth["file"], b["created_line"]), where)
        if exact:
            # Every acquire is seen, so the owner at the moment each wait began is known.
            self.assertEqual([e["other_native_tid"] for e in begins], [b["holder"]] * 2, where)
            self.assertEqual(lock["acquires_by_thread"],
                             {str(t): 1 for t in [b["holder"]] + b["waiters"]}, where)
        else:
            self.assertIsNone(lock["acquires"], where)
            self.assertIsNone(lock["failed_trylocks"], where)

        where = "rlock"
        rl = truth["rlock"]
        lock = lock_at(report, rl["lock"])
        self.assertIsNotNone(lock, where)
        self.assertEqual(lock["kind"], "RLock", where)
        self.assertEqual(lock["contended"], 1, where)
        (end,) = lock_events(events, lock["id"], "wait_end")
        self.assertEqual(end["native_tid"], rl["waiter"], where)
        self.assertEqual(end["other_native_tid"], rl["holder2"], where)
        if exact:
            self.assertEqual(lock["acquires_by_thread"],
                             {str(rl["holder"]): 3, str(rl["holder2"]): 2, str(rl["waiter"]): 1},
                             where)
            self.assertEqual(lock["releases"], 6, where)
            (begin,) = lock_events(events, lock["id"], "wait_begin")
            self.assertEqual(begin["other_native_tid"], rl["holder2"], where)

        where = "condition"
        c = truth["condition"]
        consumer = [t for t in report["threads"] if t["native_tid"] == c["consumer"]]
        self.assertEqual(len(consumer), 1, where)
        self.assertGreaterEqual(consumer[0]["locks"]["condition_waits"], 1, where)
        self.assertGreater(consumer[0]["locks"]["condition_wait_ns"], 100_000_000, where)
        # Woken while the producer still holds the condition's lock (notify inside `with cond`),
        # the consumer can block re-taking it where threads run in parallel (a free-threaded
        # build): a real wait, at most one. With a GIL the producer lets go first.
        self.assertLessEqual(consumer[0]["locks"]["lock_waits"],
                             1 if report["target"].get("free_threaded") else 0, where)
        self.assertEqual(consumer[0]["locks"]["last_woken_by"], c["producer"], where)
        cond_ends = [e for e in events if e["type"] == "lock" and e["change"] == "wait_end"
                     and e["native_tid"] == c["consumer"]]
        self.assertTrue(cond_ends and all(e["wait_kind"] == "condition" for e in cond_ends), where)

        where = "timeout"
        to = truth["timeout"]
        self.assertTrue(to["timed_out"])
        lock = lock_at(report, to["lock"])
        self.assertIsNotNone(lock, where)
        self.assertEqual(lock["timeouts"], 1, where)
        (end,) = lock_events(events, lock["id"], "wait_end")
        self.assertEqual(end["native_tid"], to["tid"], where)
        self.assertFalse(end["acquired"], where)
        self.assertGreater(end["wait_ns"], 90_000_000, where)
        if exact:
            self.assertEqual(lock["failed_trylocks"], to["failed"], where)
        else:
            self.assertIsNone(lock["failed_trylocks"], where)

        where = "reuse"
        reuse = truth["reuse"]
        if reuse["reused"]:
            at = sorted((l for l in report["locks"] if l["address"] == reuse["address"]
                         and l["contended"] == 1), key=lambda l: l["created_ns"] or -1)
            self.assertGreaterEqual(len(at), 2, where)
            self.assertNotEqual(at[-1]["id"], at[-2]["id"], where)

    def check_exact_only(self, truth, report):
        where = "counts"
        c = truth["counts"]
        for i, address in enumerate(c["own"]):
            lock = lock_at(report, address)
            self.assertIsNotNone(lock, where)
            self.assertEqual(lock["acquires_by_thread"], {str(c["tids"][i]): c["n"][i]}, where)
            self.assertEqual(lock["releases"], c["n"][i], where)
            self.assertEqual(lock["contended"], 0, where)
            self.assertEqual(lock["hold_histogram"]["count"], c["n"][i], where)
        shared = lock_at(report, c["shared"])
        self.assertEqual(shared["acquires_by_thread"], {str(t): 10 for t in c["tids"]}, where)

        where = "inversion"
        inv = truth["inversion"]
        a, b = lock_at(report, inv["a"]), lock_at(report, inv["b"])
        found = [i for i in report["order_inversions"]
                 if {i["lock_a"], i["lock_b"]} == {a["id"], b["id"]}]
        self.assertEqual(len(found), 1, where)
        self.assertEqual(found[0]["lock_a"], a["id"], where)
        self.assertEqual((found[0]["thread_ab"], found[0]["thread_ba"]), (inv["ab"], inv["ba"]),
                         where)
        self.assertEqual(report["deadlocks"], [], where)

    def test_contended(self):
        def body(interp):
            if interp.version_info() < (3, 0):
                return self.check_unavailable(interp)
            truth, report, events = self.trace(interp, "contended")
            self.check_contention(truth, report, events, exact=False)
            self.assertEqual(report["order_inversions"], [])  # needs every acquire
        self.for_each_interpreter(body)

    def test_all(self):
        def body(interp):
            if interp.version_info() < (3, 0):
                return
            truth, report, events = self.trace(interp, "all")
            self.check_contention(truth, report, events, exact=True)
            self.check_exact_only(truth, report)
        self.for_each_interpreter(body)

    def test_overhead_budget_turns_acquire_stacks_off(self):
        """--overhead-budget under the cost of --locks all --acquire-stacks: the budget steps down
        past no_acquire_stacks, and the acquire program's flag is set while attached."""
        program = ("import threading, time\n"
                   "l = threading.Lock()\n"
                   "end = time.time() + 9\n"
                   "def w():\n"
                   "    while time.time() < end:\n"
                   "        with l: pass\n"
                   "        time.sleep(0.0002)\n"
                   "ts = [threading.Thread(target=w) for _ in range(2)]\n"
                   "[t.start() for t in ts]; [t.join() for t in ts]\n")
        report_path = self.path("budget.json")
        r = harness.run([harness.threadscope(), "--no-daemon", "--log-level", "info", "run",
                         "--locks", "all", "--acquire-stacks", "8", "--overhead-budget", "0.05%",
                         "--report", report_path, "--", harness.DEBIAN_PYTHON, "-c", program],
                        timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("overhead budget: acquire stacks off", r.stdout + r.stderr)
        budget = harness.load_json(report_path)["budget"]
        self.assertIn(budget["stage"], ("no_acquire_stacks", "lock_threshold", "duty_cycle"),
                      budget)
        # --gil waits (the default): gil_waits is in effect, and so is no_acquire_stacks;
        # lock_threshold is recommended only; duty_cycle is in effect (the probes pause).
        self.assertEqual(budget["applied"], budget["stage"] != "lock_threshold", budget)

    def check_unavailable(self, interp):
        """2.7's locks are traced by neither mode; the run still works and says why."""
        report_path = self.path(interp.label + ".json")
        r = harness.run([harness.threadscope(), "run", "--report", report_path, "--"] +
                        interp.argv +
                        ["-c", "import threading; l = threading.Lock(); l.acquire()"])
        self.assertEqual(r.returncode, 0, r.stderr)
        report = harness.load_json(report_path)
        lock_probes = [p for p in report["probes"] if p["name"].startswith("lock_")]
        self.assertTrue(lock_probes)
        for p in lock_probes:
            self.assertFalse(p["attached"])
            self.assertIn("2.7", p["reason"])
        self.assertEqual(report["locks"], [])

    def test_threshold_filters_events_not_statistics(self):
        def body(interp):
            name = interp.label + ".t"
            truth_path, report_path = self.path(name + ".truth"), self.path(name + ".json")
            events_path = self.path(name + ".jsonl")
            r = harness.run([harness.threadscope(), "run", "--lock-threshold", "200ms",
                             "--report", report_path, "--events", events_path, "--"] +
                            interp.argv + [os.path.join(harness.PROGRAMS, "locks.py"), truth_path],
                            timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            truth, report = harness.load_json(truth_path), harness.load_json(report_path)
            self.assertEqual(report["target"]["lock_threshold_ns"], 200_000_000)
            lock = lock_at(report, truth["barrier"]["lock"])
            self.assertEqual(lock["contended"], 2)  # statistics count every wait
            waits = [e for e in read_events(events_path)
                     if e["type"] == "lock" and e["change"] == "wait_end"]
            self.assertTrue(waits)
            self.assertTrue(all(e["wait_ns"] >= 200_000_000 for e in waits), waits)
            # Only the barrier waits (~0.95 s) and the 0.3 s RLock wait are that long.
            self.assertFalse([e for e in waits if e["lock_id"] == lock_at(
                report, truth["timeout"]["lock"])["id"]])
        self.for_each_interpreter(body, kinds=harness.CORE)

    def test_deadlock_reported_while_it_happens(self):
        def body(interp):
            name = interp.label + ".d"
            truth_path, report_path = self.path(name + ".truth"), self.path(name + ".json")
            events_path = self.path(name + ".jsonl")
            cli = subprocess.Popen(
                [harness.threadscope(), "run", "--locks", "all", "--acquire-stacks", "8",
                 "--report", report_path,
                 "--events", events_path, "--"] + interp.argv +
                [os.path.join(harness.PROGRAMS, "deadlock.py"), truth_path],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                harness.wait_for(lambda: os.path.exists(truth_path), timeout=30,
                                 what="the deadlock program to block")
                truth = harness.load_json(truth_path)

                def deadlock_event():
                    return [e for e in read_events(events_path)
                            if e["type"] == "lock" and e["change"] == "deadlock"]
                harness.wait_for(deadlock_event, timeout=10, what="a deadlock event")
                (event,) = deadlock_event()
                self.assertEqual(sorted(event["deadlock"]["threads"]),
                                 sorted([truth["one"], truth["two"]]))
                self.assertIsNone(event["deadlock"]["resolved_ns"])
            finally:
                if os.path.exists(truth_path):
                    os.kill(harness.load_json(truth_path)["pid"], signal.SIGKILL)
                cli.wait(timeout=30)
            # `run` exits as its command did: killed by SIGKILL.
            self.assertEqual(cli.returncode, 128 + signal.SIGKILL, cli.stderr.read())
            report = harness.load_json(report_path)
            (d,) = report["deadlocks"]
            self.assertEqual(sorted(d["threads"]), sorted([truth["one"], truth["two"]]))
            ids = {lock_at(report, truth["a"])["id"], lock_at(report, truth["b"])["id"]}
            self.assertEqual(set(d["locks"]), ids)
            # one waits for B (held by two), two waits for A (held by one).
            waits = dict(zip(d["threads"], d["locks"]))
            self.assertEqual(waits[truth["one"]], lock_at(report, truth["b"])["id"])
            self.assertEqual(waits[truth["two"]], lock_at(report, truth["a"])["id"])
            self.assertIsNotNone(d["resolved_ns"])  # the kill ended it
            self.assertEqual(report["summary"]["deadlocks"], 1)
            # Where each waits and where each owner took its lock, as the deadlock records them.
            lines = truth["lines"]
            at = lambda line, fn: "%s:%d %s" % (truth["file"], line, fn)
            by_thread = {t: i for i, t in enumerate(d["threads"])}
            one, two = by_thread[truth["one"]], by_thread[truth["two"]]
            self.assertEqual(d["wait_stacks"][one]["where"], at(lines["one_waits_b"], "one"))
            self.assertEqual(d["wait_stacks"][two]["where"], at(lines["two_waits_a"], "two"))
            # one waits for B, held by two, who took it at two_takes_b; and the other way round.
            self.assertEqual(d["owner_stacks"][one]["where"], at(lines["two_takes_b"], "two"))
            self.assertEqual(d["owner_stacks"][two]["where"], at(lines["one_takes_a"], "one"))
            self.assertEqual(event["deadlock"]["wait_stacks"], d["wait_stacks"])
        self.for_each_interpreter(body, kinds=harness.CORE)

    def test_one_order_never_an_inversion(self):
        """Issue 11's "never a false deadlock": 250 distinct locks always taken in one order,
        with Conditions, Events, a Queue and thread starts and joins around them. Both modes: 0
        inversions, 0 deadlocks; all mode: every lock its own id, kind and exact counts."""
        def body(interp):
            if interp.version_info() < (3, 0):
                return
            for mode in ("all", "contended"):
                name = "%s.order.%s" % (interp.label, mode)
                truth_path, report_path = self.path(name + ".truth"), self.path(name + ".json")
                r = harness.run([harness.threadscope(), "run", "--locks", mode, "--report",
                                 report_path, "--"] + interp.argv +
                                [os.path.join(harness.PROGRAMS, "one_order.py"), truth_path],
                                timeout=120)
                self.assertEqual(r.returncode, 0, r.stderr)
                truth, report = harness.load_json(truth_path), harness.load_json(report_path)
                self.assertEqual(report["stats"]["drops"], 0, mode)
                self.assertEqual(report["order_inversions"], [], mode)
                self.assertEqual(report["deadlocks"], [], mode)
                self.assertEqual(report["summary"]["order_inversions"], 0, mode)
                self.assertEqual(report["summary"]["deadlocks"], 0, mode)
                if mode != "all":
                    continue
                ids = set()
                for i, address in enumerate(truth["locks"]):
                    where = "%s lock %d" % (mode, i)
                    lock = lock_at(report, address)
                    self.assertIsNotNone(lock, where)
                    self.assertEqual(lock["kind"], truth["kinds"][i], where)
                    ids.add(lock["id"])
                    want = dict((tid, n[i]) for tid, n in truth["counts"].items() if n[i])
                    self.assertEqual(lock["acquires_by_thread"], want, where)
                self.assertEqual(len(ids), len(truth["locks"]))
        self.for_each_interpreter(body)

    def test_free_threaded_contention_by_type_and_line(self):
        """A free-threaded build's threads contend on one list and one dict: the contention is
        reported at the list's and the dict's lines, by type, and never as a lock, an
        inversion or a deadlock. With a GIL the same program has none of it."""
        def body(interp):
            if interp.version_info() < (3, 13):
                return
            name = interp.label + ".ft"
            truth_path, report_path = self.path(name + ".truth"), self.path(name + ".json")
            r = harness.run([harness.threadscope(), "run", "--locks", "all", "--report",
                             report_path, "--"] + interp.argv +
                            [os.path.join(harness.PROGRAMS, "contention_ft.py"), truth_path,
                             "2000"], timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            truth, report = harness.load_json(truth_path), harness.load_json(report_path)
            self.assertEqual(report["stats"]["drops"], 0)
            self.assertEqual(report["order_inversions"], [])
            self.assertEqual(report["deadlocks"], [])
            cs = [c for c in report["contention"] if c["kind"] == "critical-section"]
            if truth["gil_enabled"]:
                self.assertEqual(cs, [])  # the GIL serializes the threads: no object contention
                return
            self.assertTrue(report["target"]["free_threaded"])
            # The GIL is followed on a free-threaded build, and stayed off here.
            self.assertEqual(report["gil"]["runtime"], "off", report["gil"])
            at = lambda what: "%s:%d %s" % (truth["file"], truth["lines"][what],
                                            truth["function"])
            for typ in ("list", "dict"):
                rows = [c for c in cs if c["type"] == typ and c["waits"] > 0 and
                        c["where"] == at(typ)]
                self.assertEqual(len(rows), 1, (typ, [(c["type"], c["where"], c["waits"])
                                                      for c in cs]))
                self.assertGreaterEqual(rows[0]["threads"], 2, typ)
                self.assertGreater(rows[0]["wait_ns_total"], 0, typ)
            # Nothing of the workers' lines is on the wrong type.
            for c in cs:
                if c["where"] == at("list"):
                    self.assertEqual(c["type"], "list")
                if c["where"] == at("dict"):
                    self.assertEqual(c["type"], "dict")
        self.for_each_interpreter(body, kinds=harness.CORE)


if __name__ == "__main__":
    harness.main()

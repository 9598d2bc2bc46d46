"""A target in its own pid and mount namespaces (`unshare --pid --mount --fork`), running an
interpreter the host cannot see at that path (a copy bind-mounted at /mnt inside, or the Debian
unstable root's own, pivot_root-ed into as a container runtime does): attached by
its host pid, reported with its in-container pid, its binary resolved through /proc/PID/root,
and its threads, lock waits (with the container-side file and line) and GIL traced."""
import os
import shutil
import signal
import subprocess
import time

import harness

TARGET = '''import threading, time
lock = threading.Lock()
def hold():
    with lock:
        time.sleep(0.3)
def wait():
    time.sleep(0.05)
    with lock:  # line 8: where the waiter waits
        pass
open("/mnt/ready", "w").close()
while not __import__("os").path.exists("/mnt/go"):
    time.sleep(0.01)
ts = [threading.Thread(target=hold), threading.Thread(target=wait)]
[t.start() for t in ts]
[t.join() for t in ts]
time.sleep(30)
'''


class ContainerTest(harness.BpfTestCase):
    def test_attach_by_host_pid_into_other_namespaces(self):
        # Debian's builds, as containers ship them: 12's python3.11 copied to a directory only
        # the container sees, and the Debian unstable root's interpreters in that root (a
        # container image, made the root of the container's mount namespace).
        self.for_each_interpreter(self.check, kinds=("system", "debian-unstable"))

    def check(self, interp):
        root = self.path(interp.label + ".container")
        os.makedirs(root)
        with open(os.path.join(root, "target.py"), "w") as f:
            f.write(TARGET)
        if interp.in_root:
            executable = interp.path
            inside = ("mount --bind {r} {r} && mount --bind {d} {r}/mnt && "
                      "mount -t proc proc {r}/proc && cd {r} && pivot_root . . && umount -l . && "
                      "exec {exe} /mnt/target.py").format(r=interp.root, d=root, exe=executable)
        else:
            executable = "/mnt/" + os.path.basename(interp.path)
            shutil.copy(interp.binary, os.path.join(root, os.path.basename(interp.path)))
            inside = "mount --bind %s /mnt && exec %s /mnt/target.py" % (root, executable)
        unshare = subprocess.Popen(
            ["unshare", "--pid", "--mount", "--fork", "--mount-proc", "sh", "-c", inside],
            start_new_session=True)
        try:
            harness.wait_for(lambda: os.path.exists(os.path.join(root, "ready")), timeout=20,
                             what="the containerized target")
            children = subprocess.check_output(["pgrep", "-P", str(unshare.pid)], text=True)
            pid = int(children.split()[0])
            self.assertFalse(os.path.exists(executable) and
                             os.path.samefile(executable, "/proc/%d/exe" % pid),
                             "the host must not see it")
            self.assertEqual(os.readlink("/proc/%d/exe" % pid), executable)

            report_path = self.path(interp.label + ".report.json")
            cli = subprocess.Popen([harness.threadscope(), "attach", str(pid), "--no-live",
                                    "-d", "3", "--report", report_path],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            banner = cli.stderr.readline()
            open(os.path.join(root, "go"), "w").close()
            _, err = cli.communicate(timeout=60)
            self.assertEqual(cli.returncode, 0, banner + err)
            self.assertIn("(pid 1 in its namespace)", banner)
            report = harness.load_json(report_path)
            t = report["target"]
            self.assertEqual(t["pid"], pid)
            self.assertEqual(t["ns_pid"], 1)
            self.assertTrue(t["other_mount_namespace"])
            self.assertEqual(t["executable"], executable)
            # (A subtest of its own: a missing probe fails it, the rest is still checked.)
            with self.subTest(interpreter=interp.label, check="probes"):
                for probe in report["probes"]:
                    # What a build does without (3.15's semaphore waits and frees: its locks
                    # are PyMutexes, whose waits are parks) feeds nothing there and is not
                    # placed, with its reason; everything that feeds something attaches.
                    if not probe["feeds"] and not probe["sites"]:
                        self.assertFalse(probe["attached"])
                        self.assertTrue(probe["reason"], probe["name"])
                        continue
                    self.assertTrue(probe["attached"],
                                    "%s: %s" % (probe["name"], probe["reason"]))
            started = [th for th in report["threads"] if th["origin"] == "started"]
            self.assertEqual(len(started), 2)
            self.assertTrue(report["gil"]["traced"], report["gil"]["reason"])
            waited = [l for l in report["locks"] if l["contended"]]
            self.assertEqual(len(waited), 1, report["locks"])
            self.assertEqual(waited[0]["first_contended_at"]["where"], "/mnt/target.py:8 wait")
        finally:
            os.killpg(unshare.pid, signal.SIGKILL)
            unshare.wait()


if __name__ == "__main__":
    harness.main()

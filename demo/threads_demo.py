"""threadscope's demo target: a small job runner whose threads do what real programs' do.

- a pool of named workers draining a queue, joined at the end;
- short-lived fetcher threads started every half second and joined;
- a background "flusher" that is started and never joined (a classic leak);
- a daemon watchdog still running when the program exits;
- one thread that cannot start: RLIMIT_AS and a 1 GiB stack make pthread_create fail, the
  "can't start new thread" error people hit in production.
Workers name their OS threads (prctl PR_SET_NAME), so threadscope shows their names.
"""
import ctypes
import queue
import resource
import threading
import time

libc = ctypes.CDLL(None, use_errno=True)


def name_os_thread(name):
    libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


def worker(n, jobs):
    name_os_thread("worker-%d" % n)
    while True:
        job = jobs.get()
        if job is None:
            return
        time.sleep(job)


def fetch(i):
    name_os_thread("fetch-%d" % i)
    time.sleep(0.3)


def flusher():
    name_os_thread("flusher")
    time.sleep(4)


def watchdog():
    name_os_thread("watchdog")
    while True:
        time.sleep(1)


def start_one_too_many():
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as f:
        vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20), hard))
    threading.stack_size(1 << 30)
    try:
        threading.Thread(target=time.sleep, args=(1,)).start()
    except RuntimeError as e:
        print("demo: could not start a thread, as planned:", e)
    finally:
        threading.stack_size(0)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def main():
    jobs = queue.Queue()
    pool = [threading.Thread(target=worker, args=(n, jobs)) for n in range(4)]
    for t in pool:
        t.start()
    threading.Thread(target=watchdog, daemon=True).start()
    threading.Thread(target=flusher).start()
    deadline = time.time() + 9
    i = 0
    while time.time() < deadline:
        for _ in range(3):
            jobs.put(0.2)
        f = threading.Thread(target=fetch, args=(i,))
        f.start()
        f.join()
        i += 1
        if i == 6:
            start_one_too_many()
        time.sleep(0.2)
    for _ in pool:
        jobs.put(None)
    for t in pool:
        t.join()


if __name__ == "__main__":
    main()

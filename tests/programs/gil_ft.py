"""Free-threaded ground truth (3.14t+): the GIL turned on at run time. Writes to argv[1]:

  before    3 threads spin for SPIN seconds (with the GIL off, unless the interpreter was
            started with PYTHON_GIL=1 or -X gil=1)
  import    the main thread loads `_testsinglephase_check_cache_first`, a CPython test module
            that does not declare Py_mod_gil: CPython enables the GIL for good (a RuntimeWarning)
            unless it was forced on or off at start-up
  after     3 threads spin for SPIN seconds: they now share the GIL

and sys._is_gil_enabled() before and after the import, and the thread that imported it.
"""
import importlib.util
import json
import sys
import threading
import time
import warnings

SPIN = 0.5
MODULE = "_testsinglephase_check_cache_first"


def spin():
    end = time.time() + SPIN
    n = 0
    while time.time() < end:
        n += 1


def phase(count):
    tids = []
    lock = threading.Lock()

    def run():
        with lock:
            tids.append(threading.get_native_id())
        spin()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tids


def main():
    truth = {"gil_at_start": sys._is_gil_enabled()}
    truth["before"] = phase(3)
    import _testsinglephase  # the file that also defines MODULE's init function
    spec = importlib.util.spec_from_file_location(MODULE, _testsinglephase.__file__)
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        spec.loader.exec_module(module)
    truth["import_tid"] = threading.get_native_id()
    truth["gil_after_import"] = sys._is_gil_enabled()
    truth["after"] = phase(3)
    with open(sys.argv[1], "w") as f:
        json.dump(truth, f)


main()

"""The interpreter matrix (tests/interpreters.json) resolved on this machine: what the root tier
(tests/integration/harness.py) and the benchmarks (bench/benchlib.py) run CPython with.
tests/unit/interpreters.h is the same reader for the C++ unit tests.

    for interp in interpreters.resolve():
        interp.label, interp.present, interp.missing   # skip (or fail, if required) when absent
        subprocess.run(interp.argv + ["-c", "pass"])  # how to run it
        interp.binary                                  # the host file holding the runtime (ELF)

Entries come from the file and from THREADSCOPE_EXTRA_PYTHONS (colon-separated; each `PATH` or
`LABEL=PATH`) for builds no package provides. The Debian unstable interpreters live in the root
tools/debian-unstable-root.sh builds (THREADSCOPE_DEBIAN_UNSTABLE_ROOT, default in the file) and
run through tools/in-root, which keeps the host's pid and the test's paths.
"""
import json
import os
import pwd
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MATRIX = os.path.join(HERE, "interpreters.json")
IN_ROOT = os.path.join(REPO, "tools", "in-root")
ROOT_STAMP = ".threadscope-root"
KINDS = ("system", "pyenv", "debian-unstable", "extra")
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def load(path=MATRIX):
    with open(path) as f:
        return json.load(f)


def pyenv_root():
    root = os.environ.get("PYENV_ROOT")
    if root:
        return root
    # Bazel runs tests without HOME: ask the password database.
    return os.path.join(pwd.getpwuid(os.getuid()).pw_dir, ".pyenv")


def debian_unstable_root(matrix=None):
    root = os.environ.get("THREADSCOPE_DEBIAN_UNSTABLE_ROOT")
    if root:
        return root
    return (matrix or load())["debian_unstable_root"]



class Interpreter:
    """One resolved entry. `argv` runs it (a prefix: append the script and its arguments);
    `path` is the interpreter as its processes see it (/proc/PID/exe); `binary` is the same file
    from the host, for reading its ELF; `root` is the root it lives in, or None."""

    def __init__(self, label, kind, version, path, required, argv, binary, root=None,
                 missing=None):
        self.label, self.kind, self.version, self.path = label, kind, version, path
        self.required, self.argv, self.binary, self.root = required, argv, binary, root
        self.missing = missing  # why it cannot run here, or None
        self._reported = None

    @property
    def present(self):
        return self.missing is None

    @property
    def in_root(self):
        return self.root is not None

    def reported_version(self):
        """The version the interpreter gives for itself (platform.python_version())."""
        if self._reported is None:
            self._reported = subprocess.check_output(
                self.argv + ["-c", "import platform; print(platform.python_version())"],
                text=True).strip()
        return self._reported

    def free_threaded(self):
        """True for a free-threaded build (3.13t and later): no GIL to trace."""
        if not hasattr(self, "_free_threaded"):
            out = subprocess.check_output(self.argv + [
                "-c", "import sysconfig; print(bool(sysconfig.get_config_var('Py_GIL_DISABLED')))"],
                text=True)
            self._free_threaded = out.strip() == "True"
        return self._free_threaded

    def version_info(self):
        """(major, minor), from the matrix or, for extras, from the interpreter itself."""
        version = self.version or self.reported_version()
        return tuple(int(x) for x in re.match(r"(\d+)\.(\d+)", version).groups())

    def popen(self, args, **kwargs):
        """Starts the interpreter on `args` and returns once the process is the interpreter
        (through tools/in-root it first runs the wrapper, under the same pid), or has exited."""
        p = subprocess.Popen(self.argv + list(args), **kwargs)
        self.wait_exec(p.pid, p.poll)
        return p

    def is_running_in(self, pid):
        """True when `pid` runs this interpreter's binary now."""
        try:
            return os.path.samefile("/proc/%d/exe" % pid, self.binary)
        except OSError:
            return False

    def wait_exec(self, pid, exited=lambda: None, timeout=20.0):
        deadline = time.time() + timeout
        while not self.is_running_in(pid):
            if exited() is not None:
                return
            if time.time() > deadline:
                raise AssertionError("pid %d did not become %s (%s) within %gs" %
                                     (pid, self.label, self.path, timeout))
            time.sleep(0.005)

    def __repr__(self):
        return "Interpreter(%s)" % self.label


def _extra_label(path, taken):
    label = "extra-" + os.path.basename(path)
    parts = [p for p in path.split("/") if p]
    n = 2
    while label in taken and n <= len(parts):
        label = "extra-" + "-".join(parts[-n:])
        n += 1
    return re.sub(r"[^A-Za-z0-9._+-]", "_", label)


def extras(spec=None, taken=()):
    """The THREADSCOPE_EXTRA_PYTHONS entries, as (label, path)."""
    spec = os.environ.get("THREADSCOPE_EXTRA_PYTHONS", "") if spec is None else spec
    out, labels = [], set(taken)
    for item in spec.split(":"):
        item = item.strip()
        if not item:
            continue
        label, sep, path = item.partition("=")
        if not sep:
            label, path = _extra_label(item, labels), item
        if not LABEL_RE.match(label) or label in labels:
            raise ValueError("THREADSCOPE_EXTRA_PYTHONS: bad or repeated label %r in %r" %
                             (label, item))
        if not os.path.isabs(path):
            raise ValueError("THREADSCOPE_EXTRA_PYTHONS: %r is not an absolute path" % path)
        labels.add(label)
        out.append((label, path))
    return out


def resolve(matrix=None, root=None):
    """Every interpreter of the matrix and the extras, in that order, present or not. The
    debian-unstable ones are looked for in `root` when given (the bench root)."""
    matrix = matrix or load()
    out = []
    root = os.path.abspath(root or debian_unstable_root(matrix))
    for e in matrix["interpreters"]:
        kind, path, label = e["kind"], e["path"], e["label"]
        if kind == "system":
            missing = None if os.access(path, os.X_OK) else (
                "%s is missing (tools/install-deps.sh installs it)" % path)
            out.append(Interpreter(label, kind, e["version"], path, e["required"], [path], path,
                                   missing=missing))
        elif kind == "pyenv":
            full = os.path.join(pyenv_root(), path)
            missing = None if os.access(full, os.X_OK) else (
                "pyenv CPython %s is not installed at %s" % (e["version"], full))
            out.append(Interpreter(label, kind, e["version"], full, e["required"], [full], full,
                                   missing=missing))
        elif kind == "debian-unstable":
            binary = root + path
            if not os.path.exists(os.path.join(root, ROOT_STAMP)):
                missing = ("the Debian unstable root %s is not built "
                           "(tools/debian-unstable-root.sh builds it)" % root)
            elif not os.access(binary, os.X_OK):
                missing = "%s has no %s (tools/debian-unstable-root.sh installs %s)" % (
                    root, path, e.get("package", path))
            else:
                missing = None
            out.append(Interpreter(label, kind, e["version"], path, e["required"],
                                   [IN_ROOT, root, path], binary, root=root, missing=missing))
        else:
            raise ValueError("%s: unknown kind %r in %s" % (label, kind, MATRIX))
    for label, path in extras(taken=[i.label for i in out]):
        missing = None if os.access(path, os.X_OK) else (
            "THREADSCOPE_EXTRA_PYTHONS names %s, which is not an executable file" % path)
        out.append(Interpreter(label, "extra", "", path, False, [path], path, missing=missing))
    return out


def find(label_or_path, matrix=None, root=None):
    """An interpreter by label, or a host path outside the matrix (an extra of its own)."""
    for i in resolve(matrix, root):
        if i.label == label_or_path:
            return i
    if os.path.isabs(label_or_path) or os.sep in label_or_path:
        path = os.path.abspath(label_or_path)
        missing = None if os.access(path, os.X_OK) else path + " is not an executable file"
        return Interpreter(os.path.basename(path), "extra", "", path, False, [path], path,
                           missing=missing)
    raise KeyError("no interpreter labelled %r in %s" % (label_or_path, MATRIX))


if __name__ == "__main__":
    # `python3 tests/interpreters.py`: the matrix on this machine. `--binaries`: the host ELF
    # files of the interpreters that are here, one per line (bench/fuzz.sh starts from them).
    if sys.argv[1:] == ["--binaries"]:
        for i in resolve():
            if i.present:
                print(i.binary)
        sys.exit(0)
    for i in resolve():
        print("%-22s %-16s %-9s %s" % (i.label, i.kind, "required" if i.required else "optional",
                                       " ".join(i.argv) if i.present else "MISSING: " + i.missing))

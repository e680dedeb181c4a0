"""Functions the tests call on remote agents. The remote imports this module on demand."""

import os
import sys
import threading
import time


def add(a, b):
    return a + b


def echo(value):
    return value


def getpid():
    return os.getpid()


def raise_value_error(message):
    helper_line = "this line is in the remote traceback"  # noqa: F841
    raise ValueError(message)


def sleep_and_return(seconds, value):
    time.sleep(seconds)
    return value


def wait_for_peers(barrier_name, count, timeout=10.0):
    """Block until ``count`` concurrent calls have arrived: proves calls run concurrently."""
    state = _BARRIERS.setdefault(barrier_name, threading.Barrier(count))
    state.wait(timeout)
    return threading.get_ident()


_BARRIERS = {}


def print_lines(*lines):
    for line in lines:
        print(line)
    sys.stdout.flush()
    return len(lines)


def flood_stdout():
    """Lines as fast as the tunnel takes them, forever: the controller is always reading."""
    lines = ("0123456789abcdef" * 4 + "\n") * 64
    while True:
        sys.stdout.write(lines)
        sys.stdout.flush()


def write_stderr(text):
    sys.stderr.write(text)
    sys.stderr.flush()


def subprocess_prints(text):
    """A child process writing to fd 1 must not corrupt the protocol stream."""
    import subprocess
    return subprocess.call(["sh", "-c", "echo %s; echo %s >&2" % (text, text)])


def read_stdin():
    """The protocol stream is not the remote's stdin: reading it finds nothing."""
    return sys.stdin.read()


def exit_with(code):
    sys.exit(code)


def hard_exit(code):
    os._exit(code)


def return_object():
    return object()


def return_lock():
    return threading.Lock()


def big_bytes(size):
    return b"x" * size


def module_origin(name):
    """Where the remote loaded ``name`` from, importing it if needed."""
    import importlib
    module = importlib.import_module(name)
    return getattr(module, "__file__", None), type(module.__spec__.loader).__name__


def modules_loaded():
    return sorted(sys.modules)


def is_on_remote_path(name):
    """Whether the remote could import ``name`` by itself, without the controller."""
    import importlib.machinery
    return importlib.machinery.PathFinder.find_spec(name, [p for p in sys.path if p]) is not None


def uses_json():
    import json
    return json.dumps([1, 2])


def first_ones_fast(directory, fast, seconds=60):
    """The first ``fast`` callers (across hosts sharing ``directory``) return; the rest sleep."""
    for slot in range(fast):
        try:
            os.close(os.open(os.path.join(directory, "slot-%d" % slot), os.O_CREAT | os.O_EXCL))
            return "fast"
        except FileExistsError:
            continue
    time.sleep(seconds)
    return "slow"


def claim(directory):
    """True for the first caller across hosts sharing ``directory``, False for the rest."""
    try:
        os.close(os.open(os.path.join(directory, "claimed"), os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False


def file_sha256(path):
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def site_state():
    """Whether the agent started with -S, and whether site has run since (main() sets ENABLE_USER_SITE)."""
    site = sys.modules.get("site")
    return sys.flags.no_site, site is not None and site.ENABLE_USER_SITE is not None


def running_alongside(directory, seconds):
    """How many calls (across hosts sharing ``directory``) run at once with this one, itself
    included, as seen at its start and after ``seconds``."""
    mark = os.path.join(directory, "running-%d" % os.getpid())
    open(mark, "w").close()
    try:
        seen = len(os.listdir(directory))
        time.sleep(seconds)
        return max(seen, len(os.listdir(directory)))
    finally:
        os.remove(mark)


def wait_for_file(path, seconds=60, started=None):
    """Return ``os.getpid()`` once ``path`` exists (checked every 10 ms, for at most ``seconds``);
    first, with ``started`` (a directory), leave a file there saying this call began."""
    if started is not None:
        open(os.path.join(started, "started-%d" % os.getpid()), "w").close()
    for _ in range(int(seconds * 100)):
        if os.path.exists(path):
            return os.getpid()
        time.sleep(0.01)
    raise TimeoutError(path)


def parent_pid():
    return os.getppid()


def python_version():
    return list(sys.version_info[:3])


def whoami():
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name


def wait_for_go(directory, seconds=60):
    """Leave ``started-PID`` in ``directory``, then return this agent's pid once ``go-PID``
    exists there (checked every 10 ms, for at most ``seconds``): the caller decides when
    each agent's call ends."""
    pid = os.getpid()
    open(os.path.join(directory, "started-%d" % pid), "w").close()
    return wait_for_file(os.path.join(directory, "go-%d" % pid), seconds)

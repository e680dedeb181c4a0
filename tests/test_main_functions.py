"""Functions and lambdas defined in ``__main__`` (scripts, notebook cells) run on the remote."""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent('''
    import functools
    import linecache
    import os
    import sys

    from chopsticks import RemoteException, SerializationError
    from chopsticks.tunnel import Local

    FACTOR = 10


    def scale(x):
        return x * FACTOR + offset()


    def offset():
        return len(os.sep)


    def fact(n):
        return 1 if n <= 1 else n * fact(n - 1)


    def is_even(n):
        return True if n == 0 else is_odd(n - 1)


    def is_odd(n):
        return False if n == 0 else is_even(n - 1)


    def with_defaults(a, b=FACTOR, *, c=[1, 2]):
        return a + b + sum(c)


    def make_adder(k):
        def add(x):
            return x + k
        return add


    def logged(fn):
        @functools.wraps(fn)
        def wrapper(*args):
            return ("logged", fn(*args))
        return wrapper


    @logged
    def decorated(x):
        return x + 1


    def fails():
        message = "raised in a __main__ function"
        raise RuntimeError(message)


    class Point:
        pass


    def main():
        with Local("main-test") as tun:
            print("pid", tun.call(os.getpid) != os.getpid())
            print("scale", tun.call(scale, 4))
            print("fact", tun.call(fact, 10))
            print("even", tun.call(is_even, 7))
            print("defaults", tun.call(with_defaults, 1))
            y = 5
            print("lambda", tun.call(lambda x: x + y, 2))
            print("closure", tun.call(make_adder(100), 1))
            print("decorated", tun.call(decorated, 1))
            print("nested", tun.call(map, fact, [1, 2, 3]) if False else tun.call(sum, [fact(3)]))
            try:
                tun.call(fails)
            except RemoteException as exc:
                print("traceback", "raise RuntimeError(message)" in exc.remote_traceback)
            try:
                tun.call(lambda: Point())
            except SerializationError as exc:
                print("class", "move it into a module" in str(exc))
            cell = "def from_cell(x):\\n    return ('cell', x)\\n"
            filename = "<ipython-input-7-0123abcd>"
            linecache.cache[filename] = (len(cell), None, cell.splitlines(True), filename)
            exec(compile(cell, filename, "exec"), globals())
            print("cell", tun.call(from_cell, 3))


    if __name__ == "__main__":
        main()
''')


def _run(args, cwd, **kwargs):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, **kwargs)


def test_main_script_functions_lambdas_and_closures(tmp_path):
    """A script's functions, lambdas, closures, recursion, defaults and decorators work remotely."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    result = _run([sys.executable, str(script)], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines == {
        "pid": "True",
        "scale": "41",
        "fact": "3628800",
        "even": "False",
        "defaults": "14",
        "lambda": "7",
        "closure": "101",
        "decorated": "('logged', 2)",
        "nested": "6",
        "traceback": "True",
        "class": "True",
        "cell": "('cell', 3)",
    }


def test_function_without_source_is_a_clear_error(tmp_path):
    """A function typed into the plain REPL (no source anywhere) gets a clear error."""
    code = ("from chopsticks.tunnel import Local\n"
            "def f():\n    return 1\n"
            "try:\n    Local().call(f)\nexcept TypeError as e:\n    print(e)\n")
    result = _run([sys.executable, "-c", code], cwd=str(tmp_path))
    assert "source is not available" in result.stdout, result.stdout + result.stderr

"""Helpers to run on remote hosts: commands and their output. Remote-safe: standard library, Python 3.9.

``output_lines`` is the original chopsticks' helper; ``run`` is what ``python -m
chopsticks.fanout run`` calls. A command given as a string runs through ``/bin/sh -c``; a
list runs as is. Both start the command in its own session, so a timeout kills the whole
process group, children and grandchildren included.
"""

import os
import signal
import subprocess

# How much output ``run`` keeps per stream; the rest is dropped and counted.
MAX_OUTPUT = 16 << 20


def _popen(command, cwd=None, env=None):
    return subprocess.Popen(
        command, shell=isinstance(command, str), cwd=cwd, env=env, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run(command, timeout=None, cwd=None, env=None, input=None):
    """Run ``command``; return ``{'exit_code', 'stdout', 'stderr', 'timed_out'}``.

    stdout and stderr are text (undecodable bytes escaped). After ``timeout`` seconds the
    command's whole process group is killed and ``timed_out`` is True. A command that cannot
    be started raises (FileNotFoundError, PermissionError).
    """
    proc = _popen(command, cwd, env)
    timed_out = False
    try:
        out, err = proc.communicate(input.encode() if isinstance(input, str) else input, timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            _kill_group(proc)
            proc.wait()
    _kill_group(proc)  # what the command left running in its group goes with it
    return {
        "exit_code": proc.returncode,
        "stdout": out[:MAX_OUTPUT].decode("utf-8", "surrogateescape"),
        "stderr": err[:MAX_OUTPUT].decode("utf-8", "surrogateescape"),
        "timed_out": timed_out,
    }


def output_lines(commandline, **kwargs):
    """Run a command and return its stdout as a list of lines.

    A non-zero exit raises ``subprocess.CalledProcessError`` carrying stdout and stderr.
    """
    result = run(commandline, **kwargs)
    if result["exit_code"] != 0 or result["timed_out"]:
        raise subprocess.CalledProcessError(result["exit_code"], commandline, result["stdout"], result["stderr"])
    return result["stdout"].splitlines()

"""``scripts/fleet``, run as people run it: it stops on SIGINT, SIGTERM and SIGHUP and leaves nothing."""

import os
import re
import signal
import subprocess
import sys

import pytest

from conftest import require
from test_fanout import ROOT, _alive


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_the_fleet_script_stops_on_a_signal_and_removes_its_directory_and_sshd(signum):
    """On SIGINT, SIGTERM or SIGHUP the script kills its sshd and deletes its directory and keys."""
    require(os.path.exists("/usr/sbin/sshd"), "OpenSSH's sshd is not installed (scripts/install installs it)")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "fleet.py"), "--hosts", "2"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not lines or "stops the fleet and deletes" not in lines[-1]:
            line = proc.stdout.readline()
            assert line, "the fleet script ended before it was ready: %s" % proc.stderr.read()
            lines.append(line)
        sshd = int(re.match(r"sshd \(pid (\d+)\)", lines[0]).group(1))
        directory = lines[-1].split("deletes ", 1)[1].strip()
        assert _alive(sshd) and os.path.isdir(directory)
        proc.send_signal(signum)
        _, errors = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not os.path.exists(directory), "the fleet's directory (keys included) is still there"
    assert not _alive(sshd), "the fleet's sshd is still running"
    assert proc.returncode == 0 and "Traceback" not in errors, errors

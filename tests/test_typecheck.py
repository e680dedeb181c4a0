"""Controller-side code type-checks with mypy (remote-safe code is checked for 3.9 syntax elsewhere)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTROLLER = ["errors.py", "tunnel.py", "connection.py", "future.py", "pickling.py", "modules.py",
              "bootstrap.py", "logs.py", "transports/process.py", "transports/ssh.py", "transports/ssh_pipe.py",
              "transports/ssh_auth.py", "transports/libssh2.py", "transports/ssh_relay.py", "group.py", "results.py", "queue.py",
              "transports/ssh_options.py", "known_hosts.py", "ssh_config.py", "hosts.py", "fanout.py", "transfer.py", "sources.py", "local_files.py",
              "fanout_output.py", "fanout_options.py", "containers.py"]


def test_controller_modules_pass_mypy():
    """mypy finds no type errors in the controller modules."""
    paths = [os.path.join(ROOT, "chopsticks", rel) for rel in CONTROLLER]
    result = subprocess.run([sys.executable, "-m", "mypy", "--ignore-missing-imports", *paths],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

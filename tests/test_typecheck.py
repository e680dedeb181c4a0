"""Controller-side code type-checks with mypy (remote-safe code is checked for 3.9 syntax elsewhere)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def controller_modules():
    """Every module of the package outside the remote-only folders (agent/, wire/: see
    test_remote_safe); the top-level modules remotes also import are typed all the same."""
    from test_remote_safe import REMOTE_FOLDERS
    package = os.path.join(ROOT, "chopsticks")
    found = []
    for folder, _, names in os.walk(package):
        found += [os.path.relpath(os.path.join(folder, name), package) for name in names if name.endswith(".py")]
    return sorted(rel for rel in found if rel.split(os.sep)[0] not in REMOTE_FOLDERS)


def test_controller_modules_pass_mypy():
    """mypy finds no type errors in the controller's modules."""
    paths = [os.path.join(ROOT, "chopsticks", rel) for rel in controller_modules()]
    result = subprocess.run([sys.executable, "-m", "mypy", "--ignore-missing-imports", *paths],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

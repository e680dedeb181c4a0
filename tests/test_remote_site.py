"""The agent starts without ``site`` (``python -S``) and still imports what is installed on the remote."""

import subprocess
import sys

import pytest

import remote_helpers as rh
from chopsticks.tunnel import Local

PACKAGE = 'WHERE = %r\n\n\ndef where():\n    return WHERE, __file__\n'


def _purelib(python):
    return subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()


def _package(directory, name, where):
    (directory / name).mkdir(parents=True)
    (directory / name / "__init__.py").write_text(PACKAGE % where)


@pytest.fixture(scope="module")
def remote_venv(tmp_path_factory):
    """A venv of the system python3 with packages the controller lacks: in site-packages and via a .pth."""
    root = tmp_path_factory.mktemp("remote")
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    python = str(root / "venv/bin/python")
    site_packages = root / "venv" / _purelib(python).split("/venv/", 1)[1]
    _package(site_packages, "remote_only_pkg", "remote venv")
    _package(site_packages, "shadowed_pkg", "remote venv")
    _package(root / "extra", "pth_only_pkg", "dir of a .pth")
    (site_packages / "extra.pth").write_text(str(root / "extra") + "\n")
    return python, site_packages


@pytest.fixture
def controller_copy(tmp_path, monkeypatch):
    """``shadowed_pkg`` on the controller too, with another WHERE."""
    _package(tmp_path, "shadowed_pkg", "controller")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "shadowed_pkg", raising=False)
    import shadowed_pkg
    yield shadowed_pkg
    sys.modules.pop("shadowed_pkg", None)


def test_a_package_installed_only_in_the_remote_venv_imports(remote_venv, no_leaks):
    """A package in the remote venv's site-packages, and one reached through a .pth, import there."""
    python, site_packages = remote_venv
    with Local("venv", python=python) as tunnel:
        assert tunnel.call(rh.site_state) == (1, True)  # -S, then site ran for remote_helpers' import
        filename, loader = tunnel.call(rh.module_origin, "remote_only_pkg")
        assert filename == str(site_packages / "remote_only_pkg/__init__.py") and loader == "SourceFileLoader"
        assert tunnel.call(rh.module_origin, "pth_only_pkg")[0].endswith("/extra/pth_only_pkg/__init__.py")


def test_the_remote_copy_wins_over_the_one_sent_with_a_call(remote_venv, controller_copy, no_leaks):
    """A module on both sides: the remote's installed copy runs, though the controller sent its own along."""
    python, site_packages = remote_venv
    with Local("venv-shadow", python=python) as tunnel:
        assert tunnel.call(controller_copy.where) == ("remote venv", str(site_packages / "shadowed_pkg/__init__.py"))


def test_a_package_in_the_users_site_imports(tmp_path, monkeypatch, no_leaks):
    """A ``pip install --user`` package (PYTHONUSERBASE here) imports under the system python3."""
    monkeypatch.setenv("PYTHONUSERBASE", str(tmp_path))
    with Local("user-site", python="/usr/bin/python3") as tunnel:
        python = tunnel.remote_info["python"]
        user_site = tmp_path / "lib" / ("python%d.%d" % tuple(python[:2])) / "site-packages"
        _package(user_site, "user_only_pkg", "user site")
        assert tunnel.call(rh.module_origin, "user_only_pkg")[0] == str(user_site / "user_only_pkg/__init__.py")


def test_a_stdlib_call_does_not_run_site(no_leaks):
    """A first call of standard-library code needs no site: the agent never pays for it."""
    import os
    with Local("no-site", python="/usr/bin/python3") as tunnel:
        assert tunnel.call(os.getpid) == tunnel.remote_info["pid"]
        assert tunnel.call(eval, "'site' in __import__('sys').modules") is False


def test_a_call_by_name_imports_no_msgpack_datetime_or_unpickler(no_leaks):
    """The agent talks msgpack with its own codec, so neither the msgpack package (a remote's
    or ours) nor the datetime module it pulls in is imported; a call of a named function with
    plain arguments goes by name, so no unpickler either. A tuple argument is pickled."""
    import os
    probe = "sorted(m for m in __import__('sys').modules if m in %r)" % (
        ("msgpack", "datetime", "pickle", "_pickle", "re", "collections"),)
    with Local("no-msgpack", python="/usr/bin/python3") as tunnel:
        assert tunnel.call(os.getpid) == tunnel.remote_info["pid"]
        assert tunnel.call(eval, probe) == []
        assert tunnel.call(max, (1, 2)) == 2
        assert tunnel.call(eval, probe) == ["_pickle", "collections"]

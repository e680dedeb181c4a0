"""Import on demand: modules and package data come from the controller, safely and in few round trips."""

import importlib
import sys

import pytest

import remote_helpers as rh
from chopsticks import RemoteException
from chopsticks.group import Group
from chopsticks.modules import ModuleServer
from chopsticks.tunnel import Local


class RecordingServer(ModuleServer):
    """A ModuleServer that records every name it is asked for."""

    def __init__(self):
        super().__init__()
        self.requests = []

    def serve(self, name, sent):
        self.requests.append(name)
        return super().serve(name, sent)


@pytest.fixture
def recorded(no_leaks):
    server = RecordingServer()
    tunnel = Local("imports", modules=server)
    yield tunnel, server
    tunnel.close()


def test_user_package_is_imported_from_the_controller(demo_pkg, recorded):
    """A package the remote lacks, with subpackages and relative imports, loads from the controller."""
    deep, root = demo_pkg
    tunnel, server = recorded
    assert not tunnel.call(rh.is_on_remote_path, "demo_pkg")
    filename, loader, value, doubled = tunnel.call(deep.where)
    assert filename == str(root / "demo_pkg/sub/deep.py")
    assert loader == "Importer"
    assert (value, doubled) == (42, 4)


def test_related_modules_come_along(demo_pkg, recorded):
    """A called function's module, its parents and what they import travel with the call."""
    deep, _ = demo_pkg
    tunnel, server = recorded
    tunnel.call(deep.where)
    assert [n for n in server.requests if n.startswith("demo_pkg")] == []


def test_imports_inside_a_call_cost_one_round_trip_per_package(demo_pkg, recorded):
    """A module imported by name at run time arrives with its related modules in one reply."""
    tunnel, server = recorded
    assert tunnel.call(rh.module_origin, "demo_pkg.util")[1] == "Importer"
    assert [n for n in server.requests if n.startswith("demo_pkg")] == ["demo_pkg"]  # util came along
    server.requests.clear()
    assert tunnel.call(rh.module_origin, "demo_pkg.sub.deep")[1] == "Importer"
    assert [n for n in server.requests if n.startswith("demo_pkg")] == ["demo_pkg.sub", "demo_pkg.sub.deep"]


def test_stdlib_is_never_requested(recorded):
    """Standard library modules, even ones missing on the remote, are never asked for."""
    tunnel, server = recorded
    assert tunnel.call(rh.uses_json) == "[1, 2]"
    candidates = ["tkinter", "_tkinter", "idlelib", "turtledemo", "lib2to3", "ensurepip", "curses"]
    missing = [name for name in candidates if not tunnel.call(rh.is_on_remote_path, name)]
    assert missing, "every candidate stdlib module is installed on the remote; pick another"
    with pytest.raises(RemoteException) as info:
        tunnel.call(importlib.import_module, missing[0])
    assert info.value.type_name == "ModuleNotFoundError"
    assert not [n for n in server.requests if n.partition(".")[0] in ["json", "os", "sys"] + missing]


def test_unknown_module_raises_module_not_found(recorded):
    """A module neither side has fails with ModuleNotFoundError on the remote."""
    tunnel, server = recorded
    with pytest.raises(RemoteException) as info:
        tunnel.call(importlib.import_module, "no_such_module_anywhere")
    assert info.value.type_name == "ModuleNotFoundError"
    assert "no_such_module_anywhere" in server.requests


def test_chopsticks_itself_always_comes_from_the_controller(local):
    """The remote uses the controller's chopsticks, whatever it has installed itself."""
    assert local.call(rh.module_origin, "chopsticks.wire.codec")[1] == "Importer"


def test_package_data_through_pkgutil(demo_pkg, recorded):
    """pkgutil.get_data reads package data from the controller."""
    deep, _ = demo_pkg
    tunnel, _ = recorded
    assert tunnel.call(deep.data, "data/info.txt") == b"package data\n"


@pytest.mark.parametrize("resource", ["../secret.txt", "data/../../secret.txt", "missing.txt"])
def test_package_data_outside_the_package_is_refused(demo_pkg, recorded, resource):
    """Data requests that leave the package directory, or name nothing, fail on the remote."""
    deep, _ = demo_pkg
    tunnel, _ = recorded
    with pytest.raises(RemoteException) as info:
        tunnel.call(deep.data, resource)
    assert "outside the package" not in str(info.value)


def test_package_data_symlink_out_is_refused(demo_pkg, recorded):
    """A symlink inside the package that points outside it is not followed."""
    deep, root = demo_pkg
    (root / "demo_pkg" / "data" / "link.txt").symlink_to(root / "secret.txt")
    tunnel, _ = recorded
    with pytest.raises(RemoteException) as info:
        tunnel.call(deep.data, "data/link.txt")
    assert "leads outside" in str(info.value)


def test_tracebacks_show_shipped_source_when_the_file_is_gone(demo_pkg, recorded):
    """Remote tracebacks show source lines of shipped modules from the shipped copy."""
    deep, root = demo_pkg
    tunnel, _ = recorded
    tunnel.call(deep.where)  # the remote now holds the source
    (root / "demo_pkg/sub/deep.py").unlink()
    with pytest.raises(RemoteException) as info:
        tunnel.call(deep.fail)
    assert "raise KeyError(marker)" in info.value.remote_traceback


def test_module_server_refuses_bad_names():
    """The import service answers nothing for stdlib names, paths or junk."""
    server = ModuleServer()
    for name in ["os", "json.decoder", "../etc/passwd", "a..b", "", 42, None, "x" * 1000, "/abs"]:
        assert server.serve(name, set()) == []
    assert server.serve("chopsticks.wire.codec", set())[0][0] == "chopsticks.wire.codec"


@pytest.mark.parametrize("package, resource", [
    ("chopsticks", "/etc/passwd"), ("chopsticks", "agent/../../setup.py"), ("email", "charset.py"),
    ("chopsticks", ""), ("chopsticks", "a\\..\\b"), ("no_such_pkg", "x"),
])
def test_module_server_refuses_bad_data_requests(package, resource):
    """Package data: absolute paths, .., the stdlib and unknown packages are refused."""
    with pytest.raises(OSError):
        ModuleServer().get_data(package, resource)


# -- what is served: the controller's imports, chopsticks, and serve= --------------------------

@pytest.fixture
def unimported_module(tmp_path, monkeypatch):
    """A module on the controller's sys.path (and in its cwd) that the controller never imported."""
    (tmp_path / "settings_never_imported.py").write_text("VALUE = 'from the controller'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("settings_never_imported", None)
    yield "settings_never_imported"
    sys.modules.pop("settings_never_imported", None)


def test_a_module_the_controller_never_imported_is_refused_with_how_to_allow_it(unimported_module, local):
    """Importing it on the remote raises ModuleNotFoundError that names serve= as the way to allow it."""
    with pytest.raises(RemoteException) as info:
        local.call(rh.module_origin, unimported_module)
    assert info.value.type_name == "ModuleNotFoundError"
    assert "does not serve %s" % unimported_module in str(info.value)
    assert "serve=[%r]" % unimported_module in str(info.value)


def test_serve_allows_a_module_on_every_kind_of_tunnel(unimported_module, no_leaks):
    """Tunnel(serve=[...]) lets its remote import a module the controller never imported."""
    with Local("served", serve=[unimported_module]) as tunnel:
        assert tunnel.call(rh.module_origin, unimported_module)[1] == "Importer"
    group = Group(["web-1"], serve=[unimported_module], ssh_config="")
    assert group.tunnels[0].modules.serve_names == {unimported_module}


def test_importing_a_module_on_the_controller_allows_it(unimported_module, local):
    """Once the controller imports a module, its remotes may import it too."""
    importlib.import_module(unimported_module)
    assert local.call(rh.module_origin, unimported_module)[1] == "Importer"


def test_submodules_of_an_imported_package_are_served_even_if_not_imported(demo_pkg, recorded):
    """A package's submodule that only the remote imports (lazily) comes from the controller."""
    _, root = demo_pkg
    (root / "demo_pkg" / "lazy.py").write_text("WHO = 'lazy'\n")
    tunnel, _ = recorded
    assert "demo_pkg.lazy" not in sys.modules
    assert tunnel.call(rh.module_origin, "demo_pkg.lazy")[1] == "Importer"


@pytest.mark.parametrize("serve, error", [("pkg", TypeError), (["../etc"], ValueError), ([""], ValueError)])
def test_bad_serve_values_are_refused(serve, error):
    """serve takes a list of dotted module names; a string or a path is a clear error."""
    with pytest.raises(error) as info:
        Local("bad-serve", serve=serve)
    assert "serve" in str(info.value)


class CountingServer(ModuleServer):
    """A ModuleServer that counts how often it works out a call's preloaded modules."""

    def __init__(self):
        super().__init__()
        self.preloads = 0

    def preload(self, name, sent):
        self.preloads += 1
        return super().preload(name, sent)


def test_a_fan_out_prepares_the_preloaded_modules_once(demo_pkg, no_leaks):
    """Fresh tunnels of one fan-out share one packed copy of the modules sent with the call."""
    deep, _ = demo_pkg
    server = CountingServer()
    with Group([Local("pre-%d" % i, modules=server) for i in range(3)]) as group:
        assert set(group.call(deep.where).values()) == {(deep.__file__, "Importer", 42, 4)}
    assert server.preloads == 1


def test_an_edited_module_is_preloaded_afresh(demo_pkg, no_leaks):
    """A module file edited between two fan-outs reaches the next fresh tunnel as edited."""
    deep, root = demo_pkg
    server = ModuleServer()
    with Local("before-edit", modules=server) as tunnel:
        assert tunnel.call(deep.where)[3] == 4
    (root / "demo_pkg/util.py").write_text("def double(x):\n    return 3 * x  # edited\n")
    with Local("after-edit", modules=server) as tunnel:
        assert tunnel.call(deep.where)[3] == 6

"""Remote import on demand: a meta-path finder and loader fed by the controller.

Remote-safe. The bootstrap bundle executes this file's source directly (no import system
is ready yet), then calls ``boot_from_stdin``. Modules the bundle carries (the agent itself, and
msgpack's pure-Python codec) sit in the importer's cache from the start; any other module
the remote cannot find itself is requested from the controller by dotted name, with
related modules sent along in the same reply so that a package costs few round trips.

Two finders share one importer: one at the front of ``sys.meta_path`` claims only
``chopsticks`` (the controller's version must win over any installed copy), one at the end
serves everything the remote's own finders did not find. Standard library names are never
requested. Remote tracebacks show shipped source lines through ``get_source`` (linecache
asks a module's loader when the file is not on the remote's disk).
"""

import io
import marshal
import os
import sys
import threading
from importlib.machinery import ModuleSpec


class _FrontFinder(object):
    def __init__(self, importer):
        self.importer = importer

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in self.importer.front:
            return self.importer.find_spec(fullname, path, target)
        return None


class Importer(object):
    """Finder and loader for modules that live on the controller."""

    def __init__(self, sources, stdlib_names, codes=None):
        # name -> (is_pkg, filename, source)
        self.cache = dict((name, tuple(entry)) for name, entry in sources.items())
        self.codes = codes or {}  # name -> marshalled code, compiled by a controller like us
        self.missing = set()
        self.refused = {}  # name -> why the controller does not serve it
        self.front = set(["chopsticks"])
        self.stdlib = frozenset(getattr(sys, "stdlib_module_names", None) or stdlib_names)
        self.lock = threading.Lock()
        self.request = None  # set by the agent: asks the controller for a module, fills the cache;
        # returns why the controller refused it, or None
        self.request_data = None  # set by the agent: (package, resource) -> bytes

    def install(self):
        sys.meta_path.insert(0, _FrontFinder(self))
        sys.meta_path.append(self)

    def add(self, entries):
        with self.lock:
            for name, is_pkg, filename, source in entries:
                self.cache[name] = (is_pkg, filename, source)

    def find_spec(self, fullname, path=None, target=None):
        entry = self.cache.get(fullname)
        if entry is None:
            if (fullname in self.missing or self.request is None
                    or fullname.partition(".")[0] in self.stdlib):
                return None
            refusal = self.refused.get(fullname) or self.request(fullname)  # a reply lands in self.cache
            if refusal:
                self.refused[fullname] = refusal
                raise ModuleNotFoundError(refusal, name=fullname)
            entry = self.cache.get(fullname)
            if entry is None:
                self.missing.add(fullname)
                return None
        is_pkg, filename, source = entry
        spec = ModuleSpec(fullname, self, origin=filename, is_package=is_pkg)
        if is_pkg:
            spec.submodule_search_locations = []
        spec.has_location = source is not None
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        is_pkg, filename, source = self.cache[module.__name__]
        if source is None:  # a namespace package
            return
        code = self.codes.pop(module.__name__, None)
        if code is not None:
            code = marshal.loads(code)
        else:
            code = compile(source, filename, "exec", dont_inherit=True)
        exec(code, module.__dict__)

    # -- package data: pkgutil.get_data and importlib.resources -------------------------

    def get_data(self, path):
        """Read a data file next to a shipped module, from the controller."""
        for name, (is_pkg, filename, source) in list(self.cache.items()):
            if not is_pkg or not filename:
                continue
            base = os.path.dirname(filename) + "/"
            if path.startswith(base):
                return self.request_data(name, path[len(base):])
        raise OSError("no shipped package contains %r" % (path,))

    def get_resource_reader(self, fullname):
        entry = self.cache.get(fullname)
        if entry is None or not entry[0] or not entry[1]:
            return None
        return _ResourceReader(self, fullname)

    def is_package(self, fullname):
        return self.cache[fullname][0]

    def get_source(self, fullname):
        return self.cache[fullname][2]


class _ResourceReader(object):
    def __init__(self, importer, package):
        self.importer = importer
        self.package = package

    def open_resource(self, resource):
        return io.BytesIO(self.importer.request_data(self.package, resource))

    def resource_path(self, resource):
        raise FileNotFoundError(resource)

    def is_resource(self, name):
        try:
            self.importer.request_data(self.package, name)
        except OSError:
            return False
        return True

    def contents(self):
        return iter(())


def _load_msgpack(importer):
    """Use the remote's own msgpack if it is recent enough, else the shipped fallback."""
    import msgpack  # the remote's own, or else the bundle's copy through the tail finder
    if msgpack.version >= (1, 0):
        return
    for name in list(sys.modules):
        if name == "msgpack" or name.startswith("msgpack."):
            del sys.modules[name]
    importer.front.add("msgpack")
    import msgpack  # noqa: F811  (now the bundle's copy)


def _read_exactly(size):
    data = b""
    while len(data) < size:
        chunk = os.read(0, size - len(data))
        if not chunk:
            sys.exit(86)
        data += chunk
    return data


def boot_from_stdin():
    """Entry point of the bundle: read its payload, install the importer, run the agent."""
    import zlib
    payload = marshal.loads(zlib.decompress(_read_exactly(int(_read_exactly(8), 16))))
    if sys.path and sys.path[0] in ("", "."):
        # ``python3 -c`` puts the login directory first; modules must come from the
        # remote's installed packages or from the controller, never from wherever we landed.
        del sys.path[0]
    config = payload["config"]
    same_bytecode = payload["cache_tag"] == sys.implementation.cache_tag
    importer = Importer(payload["sources"], config["stdlib"], payload["codes"] if same_bytecode else None)
    importer.install()
    _load_msgpack(importer)
    from chopsticks.agent import main
    main.run(importer, config)

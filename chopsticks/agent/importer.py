"""Remote import on demand: a meta-path finder and loader fed by the controller.

Remote-safe. The bootstrap bundle executes this file's source directly (no import system
is ready yet), then calls ``boot``. Modules the bundle carries (the agent itself) sit in the
importer's cache from the start; any other module
the remote cannot find itself is requested from the controller by dotted name, with
related modules sent along in the same reply so that a package costs few round trips.

Two finders share one importer: one at the front of ``sys.meta_path`` claims only
``chopsticks`` (the controller's version must win over any installed copy), one at the end
serves everything the remote's own finders did not find. Standard library names are never
requested. Remote tracebacks show shipped source lines through ``get_source`` (linecache
asks a module's loader when the file is not on the remote's disk).

The agent starts with ``python -S``: ``site`` runs the first time a top-level, non-stdlib
import misses on the remote (``find_with_site``), so what is installed on the remote
(dist-packages, the user's site, .pth files) is found as under a plain ``python3`` and still
wins over the controller's copy.
"""

import io
import marshal
import os
import sys
from _frozen_importlib import ModuleSpec  # importlib.machinery's; importing that costs `warnings`
from _thread import RLock, allocate_lock

# What the importer knows of ``site`` (the agent starts with ``python -S``): not run yet,
# running in one thread, run.
SITE_PENDING, SITE_RUNNING, SITE_DONE = range(3)
# The source of a module the bundle carries, until it is unpacked (see Importer.get_source).
PACKED = object()
# The controller's API modules, which need gevent: on a remote, code that imports them gets
# their remote-safe stand-in (a module that puts another in its own place in sys.modules).
ALIASES = dict.fromkeys(("chopsticks.tunnel", "chopsticks.ssh_tunnel", "chopsticks.pipe_tunnels", "chopsticks.group",
                         "chopsticks.queue", "chopsticks.containers"), "chopsticks.agent.nested")
ALIAS_SOURCE = "import sys\nfrom importlib import import_module\nsys.modules[__name__] = import_module(%r)\n"


class _FrontFinder(object):
    def __init__(self, importer):
        self.importer = importer

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in self.importer.front:
            return self.importer.find_in_cache(fullname)
        return None


class Importer(object):
    """Finder and loader for modules that live on the controller."""

    def __init__(self, modules, stdlib_names, codes=None, packed_sources=None):
        # name -> (is_pkg, filename, source); for the bundle's modules the source is PACKED:
        # it is in ``packed_sources`` (zlib of a marshal dict name -> source), unpacked only
        # when needed (another bytecode, a traceback): most agents never need it.
        self.cache = dict((name, (is_pkg, filename, PACKED)) for name, (is_pkg, filename) in modules.items())
        self.packed_sources = packed_sources
        self.codes = codes or {}  # name -> marshalled code, compiled by a controller like us
        self.missing = set()
        self.refused = {}  # name -> why the controller does not serve it
        self.front = set(["chopsticks"])
        self.stdlib = frozenset(getattr(sys, "stdlib_module_names", None) or stdlib_names)
        self.lock = allocate_lock()
        self.site = SITE_PENDING if sys.flags.no_site else SITE_DONE
        self.site_lock = RLock()
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
        if path is None and self.site != SITE_DONE and fullname not in self.stdlib:
            spec = self.find_with_site(fullname)
            if spec is not None:
                return spec
        return self.find_in_cache(fullname)

    def find_with_site(self, fullname):
        """Run ``site`` the first time a top-level import misses, and look on the remote again.

        The agent starts with ``-S``: site's paths (dist-packages, the user's site, .pth
        files, sitecustomize) cost milliseconds that a call of standard-library code never
        needs. A package installed on the remote must still win over the controller's copy,
        so before anything from the cache or the controller is used for a top-level name,
        site runs and the remote's own finders look again. What site itself imports (a .pth
        line, sitecustomize) is the remote's business: never served from the controller.
        """
        with self.site_lock:
            if self.site == SITE_RUNNING:  # site's own import, in this thread
                raise ModuleNotFoundError("No module named %r" % fullname, name=fullname)
            if self.site == SITE_PENDING:
                self.site = SITE_RUNNING
                try:
                    import site
                    site.main()
                finally:
                    self.site = SITE_DONE
        for finder in list(sys.meta_path):
            if finder is self or isinstance(finder, _FrontFinder) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, None)
            if spec is not None:
                return spec
        return None

    def find_in_cache(self, fullname):
        if fullname in ALIASES:
            self.cache[fullname] = (False, "<%s, as on a remote>" % fullname, ALIAS_SOURCE % ALIASES[fullname])
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
        if source is PACKED:
            source = self.get_source(module.__name__)
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
        source = self.cache[fullname][2]
        if source is not PACKED:
            return source
        with self.lock:
            if self.packed_sources is not None:
                import zlib
                for name, text in marshal.loads(zlib.decompress(self.packed_sources)).items():
                    is_pkg, filename, _ = self.cache[name]
                    self.cache[name] = (is_pkg, filename, text)
                self.packed_sources = None
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


def boot(payload):
    """Entry point of the bundle: install the importer, run the agent."""
    if sys.path and sys.path[0] in ("", "."):
        # ``python3 -c`` puts the login directory first; modules must come from the
        # remote's installed packages or from the controller, never from wherever we landed.
        del sys.path[0]
    config = payload["config"]
    same_bytecode = payload["cache_tag"] == sys.implementation.cache_tag
    importer = Importer(payload["modules"], config["stdlib"], payload["codes"] if same_bytecode else None,
                        payload["sources"])
    importer.install()
    from chopsticks.agent import main
    main.run(importer, config)

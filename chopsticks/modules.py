"""The controller's import service: module source by dotted name, package data by path. Controller-side.

What it serves, and nothing else (a compromised host must not read what merely sits on the
controller's path: a ``local_settings.py`` in the current directory, the operator's script):

- ``chopsticks`` itself;
- every top-level module or package the controller has imported (in ``sys.modules`` with a
  file; ``__main__`` excepted), with all its submodules and package data, imported or not,
  so ``mypkg.tasks`` importing ``mypkg.util`` lazily on the remote still works;
- the modules named in ``serve`` (a tunnel's or Group's ``serve=[...]``), with their
  submodules and data (and their parent packages, without which they cannot be imported).

A request for anything else that exists on the controller is refused with a message saying
how to allow it (the remote raises it as ``ModuleNotFoundError``); one for a name the
controller does not have is answered "not found", as before.

Everything a remote asks for is treated as hostile input. A module is found by walking the
controller's ``sys.path`` with ``importlib.machinery.PathFinder`` (or taken from an already
imported module's spec): nothing is imported or executed on the controller to answer a
request, only ``.py`` files are read, and standard library modules are never served. Package
data is served only from inside the package's own directory: no ``..``, no absolute paths,
no symlinks that lead out.

To save round trips, a reply carries, after the module asked for, the modules of the same
top-level package that it imports (found by parsing its source), transitively, up to
``RELATED_LIMIT`` of them. Each tunnel remembers what it already sent.
"""

import ast
import functools
import os
import sys
from collections import OrderedDict
from importlib.machinery import PathFinder
from importlib.util import decode_source
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Protocol, Set, Tuple

import msgpack

from chopsticks import logs
from chopsticks.wire import codec, protocol


RELATED_LIMIT = 64
# Lookups remembered (hits and misses): bounded, since a remote chooses the names.
CACHE_SIZE = 4096
# Package data files larger than this are refused; put/fetch is the way to move big files.
MAX_DATA = 64 << 20

ModuleEntry = Tuple[str, bool, Optional[str], Optional[str]]  # name, is_pkg, filename, source
_Found = Tuple[bool, Optional[str], Optional[str], Tuple[str, ...]]  # is_pkg, filename, source, imports


@functools.lru_cache(maxsize=1)
def stdlib_names() -> Tuple[str, ...]:
    """Top-level names of the controller's standard library, for remotes older than 3.10."""
    names = getattr(sys, "stdlib_module_names", None)
    if names is None:  # Python 3.9 controller
        import sysconfig
        stdlib = sysconfig.get_paths()["stdlib"]
        names = set(sys.builtin_module_names)
        for entry in os.listdir(stdlib):
            stem = entry.split(".")[0]
            if stem.isidentifier() and entry != "site-packages":
                names.add(stem)
    return tuple(sorted(names))


def _stamp(path: str) -> Tuple[int, int]:
    try:
        stat = os.stat(path)
    except OSError:
        return (-1, -1)
    return (stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=1)
def _stdlib_set() -> FrozenSet[str]:
    return frozenset(stdlib_names())


def _valid_name(name: object) -> bool:
    return isinstance(name, str) and 0 < len(name) < 512 and all(p.isidentifier() for p in name.split("."))


_shared: Dict[FrozenSet[str], "ModuleServer"] = {}


def shared_server(serve: Iterable[str] = ()) -> "ModuleServer":
    """The process-wide import service for tunnels given none, one per ``serve`` list,
    created on first use.

    Sharing it means a module's source is read and parsed once for a whole fleet."""
    key = frozenset(_serve_names(serve))
    if key not in _shared:
        _shared[key] = ModuleServer(key)
    return _shared[key]


def _serve_names(serve: Iterable[str]) -> Tuple[str, ...]:
    if isinstance(serve, (str, bytes)):
        raise TypeError("serve takes a list of module names, not one string: serve=[%r]" % (serve,))
    names = tuple(serve)
    bad = [name for name in names if not _valid_name(name)]
    if bad:
        raise ValueError("serve takes dotted module names such as 'mypkg' or 'mypkg.tasks', not %r" % bad[0])
    return names


def _imported(top: str) -> bool:
    """Whether the controller imported the top-level module or package ``top`` from a file."""
    module = sys.modules.get(top)
    return top != "__main__" and module is not None and bool(
        getattr(module, "__file__", None) or getattr(module, "__path__", None))


class ImportService(Protocol):
    """What a connection asks its import service: ``ModuleServer`` here, and in a shard
    (``chopsticks.shards.core.ShardModules``) one that asks the driver's ``ModuleServer``."""

    def preload_message(self, name: str, sent: Set[str]) -> Optional[bytes]: ...

    def answer_import(self, payload: bytes, sent: Set[str], host: str) -> Tuple[int, bytes]: ...

    def answer_data(self, payload: bytes) -> bytes: ...


class ModuleServer:
    """Finds module sources and package data for agents. One can serve many tunnels.

    ``serve``: names of modules or packages to serve beyond what the controller imported."""

    def __init__(self, serve: Iterable[str] = ()) -> None:
        self.serve_names = frozenset(_serve_names(serve))
        self._stdlib = _stdlib_set()
        self._found: "OrderedDict[str, Optional[_Found]]" = OrderedDict()
        self._stamps: Dict[str, Tuple[int, int]] = {}  # file -> (mtime_ns, size) when read
        # module -> (names, their files' stamps, packed MODULES payload): preload_message's cache
        self._packed: Dict[str, Tuple[FrozenSet[str], Tuple[Tuple[str, Tuple[int, int]], ...], bytes]] = {}

    # -- what is served --------------------------------------------------------------

    def allows(self, name: str, parents: bool = True) -> bool:
        """Whether module ``name`` may be sent to a remote (``parents``: also as the parent
        package of a module named in serve=; its data needs ``parents=False``)."""
        top = name.partition(".")[0]
        return top == "chopsticks" or _imported(top) or any(
            name == allowed or name.startswith(allowed + ".") or parents and allowed.startswith(name + ".")
            for allowed in self.serve_names)

    def refusal(self, name: str) -> str:
        """What a remote is told when it asks for ``name``, which is not served."""
        top = name.partition(".")[0]
        return ("the controller does not serve %s: it serves chopsticks, the packages it has imported "
                "itself, and the modules named in serve=; to allow it, import %s on the controller "
                "before the call, or name it: Tunnel(..., serve=[%r]) or Group(..., serve=[%r])"
                % (name, top, top, top))

    # -- modules ---------------------------------------------------------------------

    def _spec_location(self, name: str) -> Optional[Tuple[bool, Optional[str], Optional[List[str]]]]:
        """(is_pkg, origin, search locations) for ``name``, without importing anything."""
        module = sys.modules.get(name)
        spec = getattr(module, "__spec__", None) if module is not None else None
        if spec is None:
            parent, _, _ = name.rpartition(".")
            if parent:
                parent_loc = self._spec_location(parent)
                if parent_loc is None or parent_loc[2] is None:
                    return None
                path = parent_loc[2]
            else:
                path = None
            spec = PathFinder.find_spec(name, path)
            if spec is None:
                return None
        locations = spec.submodule_search_locations
        return locations is not None, spec.origin, list(locations) if locations is not None else None

    def _lookup(self, name: str) -> Optional[_Found]:
        if name in self._found:
            cached = self._found[name]
            if cached is None or cached[1] is None or _stamp(cached[1]) == self._stamps.get(cached[1]):
                self._found.move_to_end(name)
                return cached
        result: Optional[_Found] = None
        loc = self._spec_location(name)
        if loc is not None:
            is_pkg, origin, _ = loc
            if origin and origin.endswith(".py") and os.path.isfile(origin):
                self._stamps[origin] = _stamp(origin)  # an edited file is read again
                with open(origin, "rb") as f:
                    source = decode_source(f.read())  # honours PEP 263 coding cookies
                result = (is_pkg, origin, source, _imports_of(name, is_pkg, source))
            elif is_pkg and origin in (None, "namespace"):
                result = (True, None, None, ())
        self._found[name] = result
        if len(self._found) > CACHE_SIZE:
            self._found.popitem(last=False)
        return result

    def serve(self, name: object, sent: Set[str]) -> List[ModuleEntry]:
        """The reply to a remote's import request: ``name`` first (if servable), then related modules.

        PermissionError (saying how to allow it) for a module the controller has but does
        not serve; an empty reply for one it does not have."""
        if (isinstance(name, str) and _valid_name(name) and name.partition(".")[0] not in self._stdlib
                and not self.allows(name) and self._spec_location(name) is not None):
            raise PermissionError(self.refusal(name))
        return self._collect(name, sent)

    def _collect(self, name: object, sent: Set[str]) -> List[ModuleEntry]:
        if (not isinstance(name, str) or not _valid_name(name) or name.partition(".")[0] in self._stdlib
                or not self.allows(name)):
            return []
        found = self._lookup(name)
        if found is None:
            return []
        reply: List[ModuleEntry] = [(name, found[0], found[1], found[2])]
        sent.add(name)
        top = name.partition(".")[0]
        queue = list(found[3])
        while queue and len(reply) < RELATED_LIMIT:
            other = queue.pop(0)
            if other in sent or other.partition(".")[0] != top or not self.allows(other):
                continue
            sent.add(other)
            related = self._lookup(other)
            if related is not None:
                reply.append((other, related[0], related[1], related[2]))
                queue.extend(related[3])
        return reply

    def preload(self, name: str, sent: Set[str]) -> List[ModuleEntry]:
        """Modules to send along with a call to a function of module ``name``.

        The module's parents, the module, and what they import from their package, minus
        what this tunnel already has. The remote keeps them in its importer's cache and
        uses them only if its own finders come up empty, so sending early is always safe.
        """
        entries: List[ModuleEntry] = []
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            part = ".".join(parts[:i])
            if part not in sent:
                entries.extend(self._collect(part, sent))
                sent.add(part)
        return entries

    def answer_import(self, payload: bytes, sent: Set[str], host: str) -> Tuple[int, bytes]:
        """The reply to an agent's import request (its raw, unchecked payload): ``(frame kind,
        payload)``. Never raises: the agent must not be left waiting, and a request that
        cannot be answered gets an empty reply, which it takes for "not found"."""
        name: Any = None
        reply: List[ModuleEntry] = []
        try:
            name = codec.decode(payload)
            reply = self.serve(name, sent)
        except PermissionError as exc:  # it exists here, but is not served: say how to allow it
            logs.warning("module_refused", host=host, module=repr(name)[:200])
            return protocol.REFUSED, msgpack.packb(str(exc))
        except Exception as exc:  # the remote's bytes: whatever decoding or lookup makes of them
            logs.warning("module_lookup_failed", host=host, module=repr(name)[:200], error=str(exc))
        logs.event("module_served", host=host, module=repr(name)[:200], sent=len(reply))
        return protocol.MODULES, msgpack.packb(reply)

    def answer_data(self, payload: bytes) -> bytes:
        """The reply to an agent's package data request (its raw, unchecked payload):
        ``[True, data]`` or ``[False, why]``, packed. Never raises."""
        try:
            package, resource = codec.decode(payload)
            answer = [True, self.get_data(package, resource)]
        except OSError as exc:
            answer = [False, str(exc)]
        except Exception as exc:
            answer = [False, "invalid package data request: %s" % exc]
        return msgpack.packb(answer)

    def preload_message(self, name: str, sent: Set[str]) -> Optional[bytes]:
        """``preload``'s entries as one packed MODULES payload, or None when there are none.

        A fan-out's tunnels start alike, with none of them sent yet: for those the payload is
        packed once, not once per tunnel, and packed again when one of its files changed.
        Only a module found here is kept so: the name may be a remote's (a call that remote
        code makes through a tunnel it opened), and a new name per call must not keep a new
        copy of its parents each time. A name that is no module name is none of these."""
        if not _valid_name(name):
            return None
        cached = self._packed.get(name)
        if cached is None or any(_stamp(origin) != stamp for origin, stamp in cached[1]):
            entries = self.preload(name, set())
            origins = tuple((entry[2], self._stamps[entry[2]]) for entry in entries if entry[2] in self._stamps)
            cached = frozenset(entry[0] for entry in entries), origins, msgpack.packb(entries)
            if name in cached[0]:
                self._packed[name] = cached
        names, _, message = cached
        if not sent.isdisjoint(names):  # this tunnel has some already: only the rest
            entries = self.preload(name, sent)
            return msgpack.packb(entries) if entries else None
        sent.update(names)
        return message if names else None

    # -- package data ----------------------------------------------------------------

    def get_data(self, package: object, resource: object) -> bytes:
        """Bytes of ``resource`` inside ``package``'s directory; OSError for anything else."""
        if not isinstance(package, str) or not _valid_name(package) or not isinstance(resource, str):
            raise PermissionError("invalid package data request")
        if package.partition(".")[0] in self._stdlib:
            raise PermissionError("the standard library's data is not served")
        if not self.allows(package, parents=False):
            raise PermissionError(self.refusal(package))
        found = self._lookup(package)
        if found is None or not found[0] or not found[1]:
            raise FileNotFoundError("no package %s on the controller" % package)
        parts = resource.split("/")
        if (not resource or resource.startswith("/") or "\\" in resource or "\0" in resource
                or any(p in ("", ".", "..") for p in parts)):
            raise PermissionError("refused package data path %r" % resource)
        root = os.path.realpath(os.path.dirname(found[1]))
        path = os.path.realpath(os.path.join(root, *parts))
        if os.path.commonpath([root, path]) != root:
            raise PermissionError("package data path %r leads outside %s" % (resource, package))
        if not os.path.isfile(path):
            raise FileNotFoundError("no data file %r in package %s" % (resource, package))
        if os.path.getsize(path) > MAX_DATA:
            raise PermissionError("data file %r is over %d bytes" % (resource, MAX_DATA))
        with open(path, "rb") as f:
            return f.read(MAX_DATA + 1)[:MAX_DATA]


def _imports_of(name: str, is_pkg: bool, source: str) -> Tuple[str, ...]:
    """Absolute names of the modules ``source`` imports (and of submodules it may mean)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ()
    package = name if is_pkg else name.rpartition(".")[0]
    names: List[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: -(node.level - 1)]
                base = ".".join(base_parts)
                module = base + "." + node.module if node.module else base
            else:
                module = node.module or ""
            if module:
                names.append(module)
                names.extend(module + "." + alias.name for alias in node.names if alias.name != "*")
    # parents first, so the remote can import in order
    ordered: List[str] = []
    for full in names:
        parts = full.split(".")
        for i in range(1, len(parts) + 1):
            candidate = ".".join(parts[:i])
            if candidate not in ordered:
                ordered.append(candidate)
    return tuple(ordered)

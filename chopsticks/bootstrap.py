"""What starts the remote agent: the stage-1 command line and the bundle it reads. Controller-side.

Stage 1 is ``python3 -S -c <STAGE1>``: a few hundred bytes that check the interpreter's
version, read a length-prefixed zlib blob from stdin with ``os.read`` (no buffered reader that
might swallow the frames after it) and run the program in it. The blob (``Bundle``) also holds
the modules the agent needs before it can import anything from the controller: the agent
itself, whose messages are msgpack written by its own plain-Python codec (``wire/mpack.py``):
the remote's own msgpack, if any, is never used.

``-S``: the agent starts without ``site`` (its paths, .pth files and sitecustomize cost
about a third of a bare interpreter's start); the agent's importer runs it the first time
a call imports a top-level module the remote's finders do not see (``agent/importer.py``).
Not ``-E``: the remote's ``PYTHONPATH``, ``PYTHONHOME`` and friends are the remote user's
choice, kept as a plain ``python3`` would.
"""

import importlib.util
import inspect
import marshal
import sys
import textwrap
import zlib
from typing import Dict, List, Optional, Tuple

from chopsticks.modules import stdlib_names

# Exit statuses of stage 1, so the controller can tell what went wrong.
EXIT_OLD_PYTHON = 85
EXIT_SHORT_BUNDLE = 86
MIN_PYTHON = (3, 9)

# Modules the agent needs before its import channel to the controller is up.
AGENT_MODULES = (
    "chopsticks",
    "chopsticks.agent",
    "chopsticks.agent.children",
    "chopsticks.agent.main",
    "chopsticks.agent.mainfn",
    "chopsticks.agent.threads",
    "chopsticks.wire",
    "chopsticks.wire.codec",
    "chopsticks.wire.mpack",
    "chopsticks.wire.protocol",
    "chopsticks.wire.window",
)


def _stage1():
    # Runs on the remote under any python: keep it to syntax every version parses.
    import marshal, os, sys, zlib  # noqa: E401,F811
    if sys.version_info < (3, 9):
        sys.stderr.write("chopsticks: Python 3.9 or newer is required; %s is %s\n" % (sys.executable, sys.version.split()[0]))
        sys.exit(85)
    def r(n):
        b = b""
        while len(b) < n:
            c = os.read(0, n - len(b))
            if not c:
                sys.exit(86)
            b += c
        return b
    p = marshal.loads(zlib.decompress(r(int(r(8), 16))))
    c = p["cache_tag"] == sys.implementation.cache_tag and p["codes"].pop("<boot>", None)
    exec(marshal.loads(c) if c else compile(p["boot"], "<chopsticks-bundle>", "exec"), {"__name__": "__chopsticks__", "payload": p})


def stage1_source() -> str:
    """The stage-1 program: the body of ``_stage1`` without comments or indentation."""
    lines = inspect.getsource(_stage1).splitlines()[1:]
    code = [line.split("  #")[0] for line in lines if not line.strip().startswith("#")]
    body = textwrap.dedent("\n".join(code))
    return body.replace("(85)", "(%d)" % EXIT_OLD_PYTHON).replace("(86)", "(%d)" % EXIT_SHORT_BUNDLE)


def python_argv(python: str) -> List[str]:
    """The argv that starts the agent under ``python``."""
    return [python, "-S", "-c", stage1_source()]


def _module_entry(name: str) -> Tuple[bool, str, str]:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise RuntimeError("cannot find the source of %s to ship to the agent" % name)
    with open(spec.origin, encoding="utf-8") as f:
        source = f.read()
    return spec.submodule_search_locations is not None, spec.origin, source


def _header(blob: bytes) -> bytes:
    return b"%08x" % len(blob)


class Bundle:
    """What stage 1 reads, built once per configuration and reused for every tunnel.

    One length-prefixed zlib blob: a ``marshal`` dump of plain data (a format every Python 3
    reads). ``boot`` is the program stage 1 runs: the source of ``agent/importer.py`` and a
    call to its ``boot(payload)``. The rest is for it: the config, the modules the agent
    needs first (their sources zlib-compressed apart, unpacked only when needed), and the
    same modules (and ``boot``) compiled here. A remote whose
    bytecode matches ours (``sys.implementation.cache_tag``) loads the code objects and
    compiles nothing; any other compiles the sources. Compiling them costs a fresh agent
    some 20 ms of CPU, the largest part of its start on a fleet.
    """

    def __init__(self, config: Dict[str, object], bytecode_tag: str = sys.implementation.cache_tag):
        sources = {name: _module_entry(name) for name in AGENT_MODULES}
        codes = {name: marshal.dumps(compile(source, filename, "exec", dont_inherit=True))
                 for name, (_, filename, source) in sources.items()}
        boot = "%s\nboot(payload)\n" % _module_entry("chopsticks.agent.importer")[2]
        codes["<boot>"] = marshal.dumps(compile(boot, "<chopsticks-bundle>", "exec", dont_inherit=True))
        payload = {
            "boot": boot,
            "config": dict(config, stdlib=stdlib_names()),
            "modules": {name: (is_pkg, filename) for name, (is_pkg, filename, _) in sources.items()},
            # Compressed on their own: only a remote with other bytecode, or a traceback
            # through these modules, unpacks them (~0.3 ms of decompressing saved per agent).
            "sources": zlib.compress(marshal.dumps({name: entry[2] for name, entry in sources.items()}), 9),
            "cache_tag": bytecode_tag,
            "codes": codes,
        }
        dumped = marshal.dumps(payload, 4)
        self.payload = zlib.compress(dumped, 9)
        self.size = len(dumped)

    def stdin_bytes(self) -> bytes:
        """What to write to the agent's stdin before the first frame."""
        return _header(self.payload) + self.payload


_bundles: Dict[Tuple, Bundle] = {}


def bundle_for(max_result: int) -> Bundle:
    """The bundle for ``max_result``; cached, since building it reads and compresses files."""
    key = (max_result,)
    found: Optional[Bundle] = _bundles.get(key)
    if found is None:
        found = _bundles[key] = Bundle({"max_result": max_result})
    return found

"""What starts the remote agent: the stage-1 command line and the bundle it reads. Controller-side.

Stage 1 is ``python3 -c <STAGE1>``: a few hundred bytes that check the interpreter's version,
read a length-prefixed zlib bundle from stdin with ``os.read`` (no buffered reader that might
swallow the frames after it) and execute it. The bundle is the source of
``chopsticks/agent/importer.py`` followed by a call to its ``boot()`` with the modules the
agent needs before it can import anything from the controller: the agent itself and, for
remotes without msgpack, the pure-Python codec from the msgpack package installed here.
"""

import importlib.util
import inspect
import textwrap
import zlib
from typing import Dict, List, Optional, Tuple

from chopsticks.modules import stdlib_names

# Exit statuses of stage 1, so the controller can tell what went wrong.
EXIT_OLD_PYTHON = 85
EXIT_SHORT_BUNDLE = 86
MIN_PYTHON = (3, 8)

# Modules the agent needs before its import channel to the controller is up.
AGENT_MODULES = (
    "chopsticks",
    "chopsticks.agent",
    "chopsticks.agent.main",
    "chopsticks.agent.mainfn",
    "chopsticks.codec",
    "chopsticks.protocol",
)
MSGPACK_MODULES = ("msgpack", "msgpack.exceptions", "msgpack.ext", "msgpack.fallback")


def _stage1():
    # Runs on the remote under any python: keep it to syntax every version parses.
    import os, sys, zlib  # noqa: E401,F811
    if sys.version_info < (3, 8):
        sys.stderr.write("chopsticks: Python 3.8 or newer is required; %s is %s\n" % (sys.executable, sys.version.split()[0]))
        sys.exit(85)
    def r(n):
        b = b""
        while len(b) < n:
            c = os.read(0, n - len(b))
            if not c:
                sys.exit(86)
            b += c
        return b
    exec(compile(zlib.decompress(r(int(r(8), 16))), "<chopsticks-bundle>", "exec"), {"__name__": "__chopsticks__"})


def stage1_source() -> str:
    """The stage-1 program: the body of ``_stage1`` without comments or indentation."""
    lines = inspect.getsource(_stage1).splitlines()[1:]
    code = [line.split("  #")[0] for line in lines if not line.strip().startswith("#")]
    body = textwrap.dedent("\n".join(code))
    return body.replace("(85)", "(%d)" % EXIT_OLD_PYTHON).replace("(86)", "(%d)" % EXIT_SHORT_BUNDLE)


def python_argv(python: str) -> List[str]:
    """The argv that starts the agent under ``python``."""
    return [python, "-c", stage1_source()]


def _module_entry(name: str) -> Tuple[bool, str, str]:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise RuntimeError("cannot find the source of %s to ship to the agent" % name)
    with open(spec.origin, encoding="utf-8") as f:
        source = f.read()
    return spec.submodule_search_locations is not None, spec.origin, source


class Bundle:
    """The compressed bundle for one configuration, built once and reused for every tunnel."""

    def __init__(self, config: Dict[str, object]):
        sources = {name: _module_entry(name) for name in AGENT_MODULES + MSGPACK_MODULES}
        importer_source = _module_entry("chopsticks.agent.importer")[2]
        config = dict(config, stdlib=stdlib_names())
        program = "%s\nboot(%r, %r)\n" % (importer_source, sources, config)
        self.compressed = zlib.compress(program.encode("utf-8"), 9)
        self.size = len(program)

    def stdin_bytes(self) -> bytes:
        """What to write to the agent's stdin before the first frame."""
        return b"%08x" % len(self.compressed) + self.compressed


_bundles: Dict[Tuple, Bundle] = {}


def bundle_for(max_result: int) -> Bundle:
    """The bundle for ``max_result``; cached, since building it reads and compresses files."""
    key = (max_result,)
    found: Optional[Bundle] = _bundles.get(key)
    if found is None:
        found = _bundles[key] = Bundle({"max_result": max_result})
    return found

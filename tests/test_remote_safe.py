"""The remote side stays small, stdlib-only and parseable by the oldest supported Python."""

import ast
import os
import sys

import pytest

import chopsticks
from chopsticks import bootstrap

PACKAGE = os.path.dirname(os.path.abspath(chopsticks.__file__))
# Folder rule: everything under agent/ and wire/ runs on remotes, and so do the package's
# __init__, the two public helper modules the original's API names at the top level, and the
# errors and results that remote code opening tunnels (agent.nested) raises and returns.
REMOTE_FOLDERS = ("agent", "wire")
REMOTE_TOP = ("__init__.py", "facts.py", "helpers.py", "errors.py", "results.py")


def remote_safe_modules():
    """The remote-safe modules, as paths relative to the package."""
    found = list(REMOTE_TOP)
    for folder in REMOTE_FOLDERS:
        found += sorted(os.path.join(folder, name) for name in os.listdir(os.path.join(PACKAGE, folder))
                        if name.endswith(".py"))
    return found


def _module_name(rel):
    parts = rel[:-3].split(os.sep)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["chopsticks"] + parts)


REMOTE_SAFE = remote_safe_modules()
ALLOWED_CHOPSTICKS = {_module_name(rel) for rel in REMOTE_SAFE} - {"chopsticks.facts", "chopsticks.helpers"}


@pytest.mark.parametrize("rel", REMOTE_SAFE)
def test_remote_modules_parse_as_python_3_9_and_import_only_stdlib(rel):
    """Each remote-safe module parses with 3.9 grammar and imports only stdlib and itself (msgpack
    only in the codec's decoder, which runs on the controller)."""
    with open(os.path.join(PACKAGE, rel)) as f:
        tree = ast.parse(f.read(), feature_version=(3, 9))
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module] + ["%s.%s" % (node.module, a.name) for a in node.names]
        for name in names:
            top = name.partition(".")[0]
            if top == "chopsticks":
                assert name in ALLOWED_CHOPSTICKS or name.rpartition(".")[0] in ALLOWED_CHOPSTICKS, name
            else:
                assert top in sys.stdlib_module_names or top == "msgpack" and rel == "wire/codec.py", name


def test_stage1_is_small_and_compiles():
    """Stage 1 is a few hundred bytes, far below the 128 KiB argument limit, and valid Python."""
    source = bootstrap.stage1_source()
    assert len(source.encode()) < 1024
    compile(source, "<stage1>", "exec")
    assert sum(len(a) for a in bootstrap.python_argv("python3")) < 2048


def test_bundle_contains_the_agent_and_stays_compact():
    """The bundle the agent reads from stdin is compressed and modest."""
    bundle = bootstrap.bundle_for(1 << 20)
    data = bundle.stdin_bytes()
    assert len(data) < 96 * 1024
    assert int(data[:8], 16) == len(bundle.payload) == len(data) - 8


def test_stage1_runs_a_bundle_under_the_system_python():
    """Stage 1 reads a length-prefixed zlib blob from stdin with os.read and runs the program in it."""
    import marshal
    import subprocess
    import zlib
    blob = zlib.compress(marshal.dumps({"boot": "import os\nos.write(1, payload['say'])\n", "say": b"stage 2 ran",
                                        "cache_tag": "cpython-00", "codes": {}}))
    stdin = b"%08x" % len(blob) + blob
    out = subprocess.run(bootstrap.python_argv("/usr/bin/python3"), input=stdin, capture_output=True, timeout=30)
    assert out.stdout == b"stage 2 ran", out.stderr
    short = subprocess.run(bootstrap.python_argv("/usr/bin/python3"), input=stdin[:20], capture_output=True,
                           timeout=30)
    assert short.returncode == bootstrap.EXIT_SHORT_BUNDLE


def test_a_remote_with_other_bytecode_compiles_the_sources(monkeypatch, no_leaks):
    """When the remote's bytecode differs from ours, the agent starts from the shipped sources."""
    from chopsticks.tunnel import DEFAULT_MAX_RESULT, Local
    import remote_helpers as rh
    foreign = bootstrap.Bundle({"max_result": DEFAULT_MAX_RESULT}, bytecode_tag="cpython-00")
    monkeypatch.setitem(bootstrap._bundles, (DEFAULT_MAX_RESULT,), foreign)
    with Local("foreign-bytecode") as tunnel:
        assert tunnel.call(rh.add, 2, 3) == 5
        assert tunnel.call(rh.module_origin, "chopsticks.wire.codec")[1] == "Importer"


def test_the_bundles_sources_unpack_for_tracebacks(no_leaks):
    """The agent's own modules run from shipped bytecode, and their sources still unpack on demand."""
    from chopsticks.tunnel import Local
    from chopsticks.wire import codec
    with Local("sources") as tunnel:
        shipped = tunnel.call(eval, "__import__('sys').modules['chopsticks.wire.codec'].__loader__"
                                    ".get_source('chopsticks.wire.codec')")
    with open(codec.__file__, encoding="utf-8") as f:
        assert shipped == f.read()

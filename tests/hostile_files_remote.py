"""A hostile host for fetch: the real agent, but its tree listing and file accounts are scripted.

Run by tests as the ``python`` of a Local tunnel: ``hostile_files_remote.py SCRIPT.json`` (the
stage-1 arguments that follow are ignored). It does stage 1's job itself: reads the bundle's
program from stdin and runs it, after hooking the agent's importer so that
``chopsticks.remote_files``, loaded from the controller as usual, answers as the script says:

- ``entries``: what ``list_tree`` returns (any JSON; the controller must check it);
- ``payload``: the file every ``send`` really sends, whatever path it is asked for;
- ``send_mode``: the mode every ``send`` reports.

Everything else is the real agent. Standard library only; never imported by the controller.
"""

import json
import os
import sys
import zlib

with open(sys.argv[1]) as f:
    script = json.load(f)


def read_exactly(size):
    data = b""
    while len(data) < size:
        chunk = os.read(0, size - len(data))
        if not chunk:
            sys.exit(86)
        data += chunk
    return data


def craft(module):
    real_send = module.send

    def send(sid, path):
        result = real_send(sid, script.get("payload", path))
        if "send_mode" in script:
            result["mode"] = script["send_mode"]
        return result

    module.send = send
    if "entries" in script:
        module.list_tree = lambda path: script["entries"]


program = zlib.decompress(read_exactly(int(read_exactly(8), 16))).decode("utf-8")
body, _, _ = program.rpartition("boot_from_stdin()")
namespace = {"__name__": "__chopsticks__"}
exec(compile(body, "<chopsticks-bundle>", "exec"), namespace)
importer_class = namespace["Importer"]
real_exec_module = importer_class.exec_module


def exec_module(self, module):
    real_exec_module(self, module)
    if module.__name__ == "chopsticks.remote_files":
        craft(module)


importer_class.exec_module = exec_module
namespace["boot_from_stdin"]()

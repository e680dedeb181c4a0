"""A hostile host for fetch and put: the real agent, but its tree listing and file accounts are scripted.

Run by tests as the ``python`` of a Local tunnel: ``hostile_files_remote.py SCRIPT.json -c STAGE1``.
It runs the real stage 1, whose ``exec`` of the bundle's program adds a hook on the agent's
importer so that ``chopsticks.agent.files``, loaded from the controller as usual, answers as
the script says:

- ``entries``: what ``list_tree`` returns (any JSON; the controller must check it);
- ``payload``: the file every ``send`` really sends, whatever path it is asked for;
- ``send_mode``: the mode every ``send`` reports;
- ``same_file``: what every ``same_file`` (put's ``if_changed`` check) answers (any JSON).

Everything else is the real agent. Standard library only; never imported by the controller.
"""

import json
import sys

from crafted_agent import run_agent

with open(sys.argv[1]) as f:
    script = json.load(f)


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
    if "same_file" in script:
        module.same_file = lambda *args: script["same_file"]


run_agent(sys.argv[sys.argv.index("-c") + 1], craft)

"""The real agent with one of its modules (``chopsticks.agent.files`` unless told) crafted by a
hostile host's script. Imported
by ``hostile_files_remote.py`` and ``hostile_bulk_remote.py`` (which run as a tunnel's
``python``, so this file's directory is their ``sys.path[0]``); never by the controller.

``run_agent(stage1, craft, name)`` runs the real stage 1, whose ``exec`` of the bundle's
program adds a hook on the agent's importer, so that module ``name``, loaded from the
controller as usual, is handed to ``craft(module)`` as soon as it has executed.
Standard library only.
"""

import builtins
import json
import sys


def script_and_command():
    """A hostile remote's own argv, ``SCRIPT.json ... -c CODE ARGS...``: the script, CODE and ARGS."""
    with open(sys.argv[1]) as f:
        script = json.load(f)
    argv = sys.argv[2:]
    at = argv.index("-c")
    return script, argv[at + 1], argv[at + 2:]


def run_agent(stage1, craft, name="chopsticks.agent.files"):
    def hook(importer_class):
        real_exec_module = importer_class.exec_module

        def exec_module(self, module):
            real_exec_module(self, module)
            if module.__name__ == name:
                craft(module)

        importer_class.exec_module = exec_module

    def bundle_exec(code, namespace):
        """Stage 1's exec: the bundle's program gets the hook run just before the agent boots."""
        if "payload" in namespace:
            body, _, _ = namespace["payload"]["boot"].rpartition("boot(payload)")
            code = compile(body + "\n_crafted_agent_hook(Importer)\nboot(payload)\n", "<chopsticks-bundle>", "exec")
        exec(code, namespace)

    builtins._crafted_agent_hook = hook  # the bundle runs in globals of its own
    exec(stage1, {"__name__": "__main__", "exec": bundle_exec})

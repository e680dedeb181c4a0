"""Arguments from elsewhere than the command line: ``CHOPSTICKS_*`` variables and ``@FILE``. CLI layer.

Each variable in ``VARIABLES`` gives its option's default: it counts as if given first, so the
command line wins (an option given there, before or after the subcommand, replaces it; for a
repeatable option such as ``--key``, any on the command line replace the variable's). A bad
value is the option's usage error, naming the variable.

An argument ``@FILE`` before the subcommand is replaced by the arguments in FILE, one per line
(blank lines and lines starting with ``#`` skipped), read where it stands; files may name files,
10 deep at most. It is not read as a file where it is the value of ``-H``/``--hosts`` or
``-x``/``--exclude``, where ``@NAME`` is a group (``fanout.targets``), nor after the subcommand
or ``--``, where words belong to the command.
"""

import os
from typing import Dict, List, Optional, Tuple

from chopsticks.fanout.options import UsageError

# variable -> the option it gives (documented in the README).
VARIABLES: Dict[str, str] = {
    "CHOPSTICKS_USER": "--user",
    "CHOPSTICKS_PORT": "--port",
    "CHOPSTICKS_KEY": "--key",
    "CHOPSTICKS_JUMP": "--jump",
    "CHOPSTICKS_KNOWN_HOSTS": "--known-hosts",
    "CHOPSTICKS_HOST_KEY_POLICY": "--host-key-policy",
    "CHOPSTICKS_SSH_CONFIG": "--ssh-config",
    "CHOPSTICKS_CONNECT_TIMEOUT": "--connect-timeout",
    "CHOPSTICKS_TIMEOUT": "--timeout",
    "CHOPSTICKS_CONCURRENCY": "--concurrency",
    "CHOPSTICKS_PYTHON": "--python",
    "CHOPSTICKS_TRANSPORT": "--transport",
    "CHOPSTICKS_FORMAT": "--format",
    "CHOPSTICKS_GROUPS": "--groups",
    "CHOPSTICKS_INVENTORY": "--inventory",
}
# The short spellings of those options, for telling whether the command line gives one.
SHORT = {"--user": "-u", "--port": "-p", "--key": "-i", "--jump": "-J", "--ssh-config": "-F", "--timeout": "-t",
         "--concurrency": "-c"}
# The subcommands: an @FILE after one is not read (``expand_files``).
COMMANDS = ("facts", "call", "run", "put", "fetch")
# Options whose value is host words, where @NAME is a group and not a file.
HOST_OPTIONS = ("-H", "--hosts", "-x", "--exclude")
MAX_FILE_DEPTH = 10


def expand_files(argv: List[str], depth: int = 0) -> List[str]:
    """``argv`` with each ``@FILE`` before the subcommand replaced by the arguments in FILE
    (what follows the subcommand, or ``--``, is its own: a command's words, a call's arguments)."""
    out: List[str] = []
    for index, arg in enumerate(argv):
        if arg in COMMANDS or arg == "--":
            return out + argv[index:]
        if not arg.startswith("@") or len(arg) == 1 or (index and argv[index - 1] in HOST_OPTIONS):
            out.append(arg)
            continue
        if depth >= MAX_FILE_DEPTH:
            raise UsageError("argument files nest more than %d deep at %s" % (MAX_FILE_DEPTH, arg))
        try:
            with open(arg[1:], encoding="utf-8") as f:
                lines = [line.rstrip("\r\n") for line in f]
        except OSError as exc:
            raise UsageError("cannot read argument file %r: %s" % (arg[1:], exc.strerror)) from None
        except UnicodeDecodeError:
            raise UsageError("argument file %r is not UTF-8 text" % arg[1:]) from None
        out.extend(expand_files([line for line in lines if line.strip() and not line.lstrip().startswith("#")],
                                depth + 1))
    return out


def _given(argv: List[str], option: str) -> bool:
    """Whether the command line gives ``option`` (up to ``--``: what follows is a command's words)."""
    flags = (option, SHORT.get(option, option))
    options = argv[:argv.index("--")] if "--" in argv else argv
    return any(arg in flags or arg.startswith(option + "=") or (arg.startswith(flags[1]) and len(flags[1]) == 2
                                                                  and len(arg) > 2 and not arg.startswith("--"))
               for arg in options)


def from_environment(argv: List[str], environ: Optional[Dict[str, str]] = None) -> Tuple[List[str], Dict[str, str]]:
    """``argv`` preceded by the options the variables give (those the command line does not);
    and which option came from which variable, for error messages."""
    environ = dict(os.environ) if environ is None else environ
    front: List[str] = []
    sources: Dict[str, str] = {}
    for variable, option in VARIABLES.items():
        value = environ.get(variable)
        if value is None or value == "" and option != "--ssh-config" or _given(argv, option):
            continue
        front += [option, value]
        sources[option] = variable
    return front + argv, sources


def blame(message: str, sources: Dict[str, str]) -> str:
    """A usage error about an option a variable gave says so."""
    for option, variable in sources.items():
        if option in message:
            return "%s (from $%s)" % (message, variable)
    return message

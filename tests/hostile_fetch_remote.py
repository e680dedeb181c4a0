"""A hostile host for fetch over extra SSH sessions: the real agent and the real range reader,
but scripted where the test says.

Run by tests as the ``python`` of an SSHTunnel: ``hostile_fetch_remote.py SCRIPT.json -S -c
CODE ARGS...``. What it plays depends on CODE:

- the range reader (``agent.ranges.RANGE_READER``, run once per byte range): ``reader`` in the
  script names how it lies (``hostile_reader``), for the range at offset ``at`` (default: every
  range); any other range runs the real reader;
- anything else is stage 1 of the real agent, whose ``chopsticks.agent.files`` answers
  ``send_or_open`` with the script's ``open_source`` where the real one keeps the file open
  (a dict is merged into the real answer, anything else replaces it).

Standard library only; never imported by the controller.
"""

import os
import sys
import zlib

from crafted_agent import run_agent, script_and_command

script, code, args = script_and_command()


def say(data):
    out = sys.stdout.buffer
    out.write(data)
    out.flush()


def hostile_reader(how, path, offset, length):
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    say(b"R\n")
    if how == "short":  # half its range, then an honest-looking trailer for that half
        half = data[:len(data) // 2]
        say(half + b"D %08x\n" % zlib.crc32(half))
    elif how == "long":  # its range and 100 bytes more, then the range's trailer
        say(data + b"x" * 100 + b"D %08x\n" % zlib.crc32(data))
    elif how == "crc":
        say(data + b"D %08x\n" % (zlib.crc32(data) ^ 1))
    elif how == "overlong":  # its range, then a line of 10 KB
        say(data + b"D " + b"9" * 10000 + b"\n")
    elif how == "exit-early":  # a little, then gone
        say(data[:1000])
        os._exit(0)


def craft(module):
    if "open_source" not in script:
        return
    real = module.send_or_open

    def send_or_open(*a, **k):
        result = real(*a, **k)
        if not (isinstance(result, dict) and "token" in result):
            return result
        lie = script["open_source"]
        if isinstance(lie, dict):
            result.update(lie)
            return result
        return lie

    module.send_or_open = send_or_open


if "def read_range(path, dev, ino, offset, length)" in code:
    path, dev, ino, offset, length = args[0], int(args[1]), int(args[2]), int(args[3]), int(args[4])
    if "reader" in script and script.get("at", offset) == offset:
        hostile_reader(script["reader"], path, offset, length)
    else:
        sys.argv = ["-c"] + args
        exec(compile(code, "<range-reader>", "exec"), {"__name__": "__main__"})
else:
    run_agent(code, craft)

"""A hostile host for put over extra SSH sessions: the real agent and the real range writer,
but scripted where the test says.

Run by tests as the ``python`` of an SSHTunnel: ``hostile_bulk_remote.py SCRIPT.json -S -c CODE
ARGS...``. What it plays depends on CODE:

- the range writer (``agent.ranges.RANGE_WRITER``, run once per byte range): ``writer`` in the
  script names how it lies (``hostile_writer``), for the range at offset ``at`` (default: every
  range); any other range runs the real writer;
- anything else is stage 1 of the real agent, whose ``chopsticks.agent.ranges`` (loaded from the
  controller as usual) answers ``open_part`` with the script's ``open_part`` (nothing made),
  and ``finish_part`` with the script's ``finish_part`` (a dict is merged into the real
  account, anything else replaces it).

Standard library only; never imported by the controller.
"""

import os
import sys
import time
import zlib

from crafted_agent import run_agent, script_and_command

script, code, args = script_and_command()


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def read_range(length):
    data = b""
    while len(data) < length:
        got = sys.stdin.buffer.read(length - len(data))
        if not got:
            break
        data += got
    return data


def hostile_writer(how, path, offset, length):
    fd = os.open(path, os.O_WRONLY)
    if how == "silent":  # never says R: waits for its input to end
        sys.stdin.buffer.read()
        return
    if how == "refuses":
        say("E no, not today")
        return
    if how == "escapes":  # a terminal title and a clear screen, for whoever prints the error
        say("E \x1b]0;owned\x07\x1b[2J")
        return
    say("R")
    if how == "exit-early":  # takes a little, then is gone
        sys.stdin.buffer.read(1000)
        os._exit(0)
    data = read_range(length)
    if how == "slow":  # an honest writer, but slow to answer once its input has ended
        time.sleep(script["sleep"])
    crc = zlib.crc32(data)
    os.pwrite(fd, data, offset)
    answers = {
        "count": "D %d %08x" % (len(data) + 1, crc),
        "short": "D %d %08x" % (len(data) // 2, zlib.crc32(data[:len(data) // 2])),
        "crc": "D %d %08x" % (len(data), crc ^ 1),
        "long": "D " + "9" * 10000,
        "slow": "D %d %08x" % (len(data), crc),
    }
    say(answers[how])


def craft(module):
    if "open_part" in script:
        def open_part(token, *a, **k):  # "TOKEN" in the script stands for the controller's
            lie = script["open_part"]
            return dict(lie, token=token) if isinstance(lie, dict) and lie.get("token") == "TOKEN" else lie

        module.open_part = open_part
    if "finish_part" in script:
        real_finish = module.finish_part

        def finish_part(*a, **k):
            result = real_finish(*a, **k)
            lie = script["finish_part"]
            if isinstance(lie, dict):
                result.update(lie)
                return result
            return lie

        module.finish_part = finish_part


if "def main(path, dev, ino, offset, length)" in code:
    path, dev, ino, offset, length = args[0], int(args[1]), int(args[2]), int(args[3]), int(args[4])
    if "writer" in script and script.get("at", offset) == offset:
        hostile_writer(script["writer"], path, offset, length)
    else:
        sys.argv = ["-c"] + args
        exec(compile(code, "<range-writer>", "exec"), {"__name__": "__main__"})
else:
    run_agent(code, craft, "chopsticks.agent.ranges")

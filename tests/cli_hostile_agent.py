"""A hostile host for the CLI tests: speaks the protocol, answers every call with a crafted value.

Usage (as the ``--python`` of a ``--transport local`` host): cli_hostile_agent.py SCENARIO.
Never imported by the controller.
"""

import math
import sys

import msgpack

from chopsticks.wire import codec, protocol

ANSWERS = {
    "a_list": ["not", "what", "run", "returns"],
    "run_dict_of_wrong_types": {"exit_code": 0, "stdout": 5, "stderr": None, "timed_out": "no"},
    "odd_facts": {"hostname": "web\x1b[2J\x1b]0;owned\x07", "load": [10 ** 400, math.nan, 1], "uptime": math.inf,
                  "memory": {"total": "lots", "available": 10 ** 5000}, "kernel": 5, "python_version": None,
                  "os_release": [1, 2], "cpus": -math.inf, "ip": "1.2.3.4\r\x9b31m", "arch": b"\x1b[5m"},
}

answer = ANSWERS[sys.argv[1]]
stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
stdin.read(int(stdin.read(8), 16))  # the bootstrap's blob, after 8 hex digits of its length
stdout.write(protocol.SYNC)
stdout.write(b"".join(protocol.encode(protocol.HELLO, 0, msgpack.packb({"python": [3, 11, 0], "pid": 1}))))
stdout.flush()
decoder = protocol.Decoder()
while True:
    data = stdin.read1(1 << 16)
    if not data:
        break
    for frame in decoder.feed(data):
        if frame.kind in protocol.CALLS:
            stdout.write(b"".join(protocol.encode(protocol.RESULT, frame.req_id, codec.encode(answer))))
            stdout.flush()

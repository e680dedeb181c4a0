"""A TCP peer on loopback that is not a well-behaved SSH server. Run as a subprocess by tests.

Usage: hostile_ssh_peer.py MODE. Prints its port, then serves every connection per MODE:
``junk`` streams bytes without a newline forever, ``lines`` streams text lines forever,
``http`` answers like an HTTP server, ``flood`` sends a valid identification line and then
SSH_MSG_IGNORE packets forever, ``oversized`` a valid identification line and then the start
of a packet longer than SSH allows, and waits. Prints ``flooding`` once it has sent 4 MiB to a client.
"""

import socket
import struct
import sys
import threading

MODE = sys.argv[1]
# an unencrypted SSH binary packet: length 12, padding 6, SSH_MSG_IGNORE with an empty string
IGNORE = struct.pack(">IBB", 12, 6, 2) + b"\0" * 10
STREAMS = {
    "junk": (b"", b"x" * 65536),
    "lines": (b"", b"this is not ssh\r\n" * 4096),
    "flood": (b"SSH-2.0-OpenSSH_9.2\r\n", IGNORE * (1 << 20)),
}
# sent once: the length field of a packet of almost 2 GiB (SSH's limit is 35000 bytes)
ONCE = {"oversized": b"SSH-2.0-OpenSSH_9.2\r\n" + struct.pack(">I", 0x7FFFFFF0) + b"\0" * 64}


def serve(conn):
    try:
        if MODE == "http":
            conn.recv(1024)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nContent-Length: 0\r\n\r\n")
            return
        if MODE in ONCE:
            conn.sendall(ONCE[MODE])
            while conn.recv(65536):  # until the client hangs up
                pass
            return
        first, forever = STREAMS[MODE]
        conn.sendall(first)
        sent = 0
        while True:
            conn.sendall(forever)
            sent += len(forever)
            if sent >= 4 << 20 > sent - len(forever):
                print("flooding", flush=True)
    except OSError:
        pass
    finally:
        conn.close()


def main():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    print(server.getsockname()[1], flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


main()

"""A ProxyCommand for the tests, what ``nc HOST PORT`` does: connect to HOST PORT and relay stdin
to it and it to stdout, until it closes. With ``--stderr TEXT`` it first writes TEXT to stderr."""

import os
import select
import socket
import sys


def main():
    args = sys.argv[1:]
    if args[:1] == ["--stderr"]:
        sys.stderr.write(args[1] + "\n")
        sys.stderr.flush()
        args = args[2:]
    sock = socket.create_connection((args[0], int(args[1])))
    to = {0: sock.fileno(), sock.fileno(): 1}
    watched = [0, sock.fileno()]
    while watched:
        for fd in select.select(watched, [], [])[0]:
            data = os.read(fd, 65536)
            if not data:
                if fd != 0:
                    return  # the server closed: so do we
                sock.shutdown(socket.SHUT_WR)
                watched.remove(0)
                continue
            view = memoryview(data)
            while view:
                view = view[os.write(to[fd], view):]


if __name__ == "__main__":
    main()

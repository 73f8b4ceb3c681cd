"""A ProxyCommand for tests: relays stdin/stdout to a TCP port on 127.0.0.1 (what `nc` would do)."""

import os
import selectors
import socket
import sys

connection = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
selector = selectors.DefaultSelector()
selector.register(sys.stdin.fileno(), selectors.EVENT_READ)
selector.register(connection, selectors.EVENT_READ)
while True:
    for key, _ in selector.select():
        if key.fileobj is connection:
            data = connection.recv(65536)
            if not data:
                sys.exit(0)
            os.write(sys.stdout.fileno(), data)
        else:
            data = os.read(sys.stdin.fileno(), 65536)
            if not data:
                sys.exit(0)
            connection.sendall(data)

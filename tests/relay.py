"""Relays for tests, between the client and the test sshd, that a test can cut or stall.

As a ProxyCommand (what `nc` would do), relaying stdin/stdout to a TCP port on 127.0.0.1:

    ProxyCommand python3 tests/relay.py %p                      # relay
    ProxyCommand python3 tests/relay.py %p --cut-after 1000000   # exit after relaying that many bytes upstream

In a test, a TCP relay on a port of its own:

    with Relay(sshd.port, cut_after=1_000_000) as relay:   # cut every connection after ~1 MB upstream
        ...  connect to 127.0.0.1:relay.port ...
    relay.cut()     # close every connection now (the client sees the server hang up)
    relay.stall()   # stop relaying on the open connections without closing them (a dead network)

A relay at a distance, for benchmarks (this kernel has no netem):

    with Relay(sshd.port, delay=0.025) as relay:   # 25 ms each way: a 50 ms round trip
        ...
    relay.turns()   # how often the client spoke again after a silence of most of a round trip

Each chunk read is stamped on arrival and written out at arrival + `delay`, in order, by a thread per
direction; the delay does not grow with the bytes in flight (no bandwidth limit is added).
"""

import collections
import os
import selectors
import socket
import sys
import threading
import time
from typing import List, Optional


class Relay:
    def __init__(self, target_port: int, cut_after: Optional[int] = None, delay: float = 0.0):
        self.target_port = target_port
        self.cut_after = cut_after
        #: seconds each chunk is held in each direction (a round trip of 2 x delay)
        self.delay = delay
        #: per connection: (monotonic time of arrival, upstream?) for every chunk read
        self.arrivals: dict = collections.defaultdict(list)
        self.upstream_bytes = 0
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: List[socket.socket] = []
        self._lock = threading.Lock()
        self._stalled = set()  # ids of connections that no longer relay anything
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            for end in (client, server):  # a network does not hold a small packet back for an acknowledgement
                end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, server]
                self.connections += 1
                number = self.connections
            threading.Thread(target=self._pipe, args=(number, client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(number, server, client, False), daemon=True).start()

    def _pipe(self, number: int, source: socket.socket, sink: socket.socket, upstream: bool):
        if self.delay:
            queue = collections.deque()
            ready = threading.Condition()
            threading.Thread(target=self._release, args=(queue, ready, source, sink), daemon=True).start()
        delayed_end = False
        try:
            while True:
                data = source.recv(262144)
                if not data:
                    if self.delay:  # the end goes through after the bytes before it
                        with ready:
                            queue.append((time.monotonic() + self.delay, None))
                            ready.notify()
                        delayed_end = True
                    break
                arrived = time.monotonic()
                self.arrivals[number].append((arrived, upstream))
                if self.delay:
                    with ready:
                        queue.append((arrived + self.delay, data))
                        ready.notify()
                    continue
                while number in self._stalled and not self._closed:
                    time.sleep(0.05)  # hold the bytes: nothing goes through, nothing is closed
                if upstream:
                    with self._lock:
                        self.upstream_bytes += len(data)
                        over = self.cut_after is not None and self.upstream_bytes >= self.cut_after
                        if over:
                            self.cut_after = None  # once: a later connection (the client's retry) goes through
                    if over:
                        self.cut()
                        return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            if not delayed_end:
                for end in (source, sink):
                    _hang_up(end)

    def _release(self, queue, ready, source, sink):
        """Writes each chunk at its arrival time + delay, in order; passes on the end of the stream."""
        try:
            while True:
                with ready:
                    while not queue:
                        ready.wait()
                    due, data = queue.popleft()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if data is None:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                _hang_up(end)

    def turns(self, number: Optional[int] = None, silence: Optional[float] = None) -> int:
        """Round trips the client waited for on connection `number` (default: the last): the times it sent
        again after a silence of at least `silence` (default 0.8 x the round trip) that followed an
        answer from the server. Counts the first chunk too (the connection's start)."""
        number = number or self.connections
        silence = 1.6 * self.delay if silence is None else silence
        count, last_up, answered = 0, None, True
        for stamp, upstream in self.arrivals[number]:
            if not upstream:
                answered = True
                continue
            if last_up is None or (answered and stamp - last_up >= silence):
                count += 1
            last_up, answered = stamp, False
        return count

    def stall(self):
        """Stop relaying on every open connection, without closing it; later connections still work."""
        self._stalled.update(range(1, self.connections + 1))

    def cut(self):
        """Close every relayed connection at once; new connections are still relayed."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for end in sockets:
            _hang_up(end)

    def close(self):
        self._closed = True
        self._listener.close()
        self.cut()


def _hang_up(end: socket.socket):
    try:
        end.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    end.close()


def _proxy_command(port: int, cut_after: Optional[int]):
    connection = socket.create_connection(("127.0.0.1", port))
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ)
    selector.register(connection, selectors.EVENT_READ)
    sent = 0
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
                sent += len(data)
                if cut_after is not None and sent >= cut_after:
                    os._exit(0)  # as a jump host that drops the connection: the client sees the end of the output


if __name__ == "__main__":
    arguments = sys.argv[1:]
    limit = None
    if "--cut-after" in arguments:
        index = arguments.index("--cut-after")
        limit = int(arguments[index + 1])
        del arguments[index:index + 2]
    _proxy_command(int(arguments[0]), limit)

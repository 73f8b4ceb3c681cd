"""Requests to the example app in a loop, counting the ones that did not answer: the live tests and the loader
benchmarks run it during a load."""

import threading
import time

from hotload.images.example_app import CounterApp, heading_of


class RequestLoop(threading.Thread):
    """Requests the given URLs in turn, as fast as it can, recording every request.

    >>> loop = RequestLoop([app.url, session_url]); loop.start(); ...; loop.done.set(); loop.join()
    >>> loop.failures()      # records of requests that did not answer 200 with the counter page
    """

    def __init__(self, urls):
        super().__init__(daemon=True)
        self.urls = urls
        self.records = []  # (start, end, ok, heading), times from time.monotonic()
        self.done = threading.Event()

    def run(self):
        index = 0
        while not self.done.is_set():
            url = self.urls[index % len(self.urls)]
            index += 1
            started = time.monotonic()
            heading, ok = None, False
            try:
                status, page, _ = CounterApp.get(url)
                heading = heading_of(page)
                ok = status == 200 and heading.startswith("Counter")
            except OSError:  # URLError and connection errors are OSErrors
                pass
            self.records.append((started, time.monotonic(), ok, heading))

    def failures(self):
        return [record for record in self.records if not record[2]]

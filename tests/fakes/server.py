"""What the fake API servers share: serving on loopback in a thread, request counting, and use as a
context manager. A fake sets HANDLER (its BaseHTTPRequestHandler), HANDLER_ATTR (the attribute its
handler reaches the fake through) and NAME (the server thread's name), and calls init_server()."""

from __future__ import annotations

import threading
from collections import Counter
from http.server import ThreadingHTTPServer


class FakeServer:
    HANDLER: type = None
    HANDLER_ATTR = "fake"
    NAME = "fake-api"

    def init_server(self):
        self.lock = threading.RLock()
        self.counts = Counter()
        self.calls = []
        self.server = None
        self.thread = None

    def start(self, port=0, host="127.0.0.1"):
        handler = type("Handler", (self.HANDLER,), {self.HANDLER_ATTR: self})
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name=self.NAME, daemon=True)
        self.thread.start()
        return self.url

    @property
    def url(self):
        host, port = self.server.server_address[:2]
        return "http://%s:%d" % (host, port)

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def reset_counts(self):
        with self.lock:
            self.counts.clear()
            del self.calls[:]

    @property
    def total_requests(self):
        return sum(self.counts.values())

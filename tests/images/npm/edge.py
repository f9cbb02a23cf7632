"""Ports 80 and 443 of the NPM stand-in: NPM's default site for every request (its "Congratulations" page with
a 200, as the real default server answers hosts it has no proxy host for) over HTTP, and the same over TLS with
the dummy certificate /init made in /data/nginx. Nothing is proxied."""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGE = (b"<!doctype html><html><head><title>Default Site</title></head><body><h1>Congratulations!</h1>"
        b"<p>You've successfully started the Nginx Proxy Manager.</p></body></html>\n")
CERT, KEY = "/data/nginx/dummycert.pem", "/data/nginx/dummykey.pem"


class Page(BaseHTTPRequestHandler):
    server_version = "openresty"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        return

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(PAGE)

    do_HEAD = do_POST = do_GET


class TlsPage(Page):
    def setup(self):
        # The handshake runs here, in the connection's thread, not in the accept loop.
        self.request.settimeout(10)
        self.request.do_handshake()
        super().setup()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    context = None

    def get_request(self):
        sock, addr = self.socket.accept()
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        return


def main():
    http = Server(("0.0.0.0", 80), Page)
    https = Server(("0.0.0.0", 443), TlsPage)
    https.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    https.context.load_cert_chain(CERT, KEY)
    threading.Thread(target=https.serve_forever, daemon=True).start()
    http.serve_forever()


if __name__ == "__main__":
    main()

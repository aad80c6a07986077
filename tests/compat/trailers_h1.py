"""An HTTP/1.1 server that answers every request with a chunked body and a
trailer field, written byte for byte as RFC 9112 section 7.1.2 shows, for
the curl trailers case of the compatibility suite (tests/compat.rs).
Hypercorn sends trailers only over HTTP/2; this covers HTTP/1.1.

Run: python trailers_h1.py   -> prints `listening on <port>`
"""

import socketserver

RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"Trailer: X-Checksum\r\n"
    b"\r\n"
    b"5\r\nhello\r\n"
    b"0\r\n"
    b"X-Checksum: abc123\r\n"
    b"\r\n"
)


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            # Read one request head (these requests have no body).
            line = self.rfile.readline()
            if not line:
                return
            while line not in (b"\r\n", b"\n", b""):
                line = self.rfile.readline()
            self.wfile.write(RESPONSE)
            self.wfile.flush()


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    with Server(("127.0.0.1", 0), Handler) as server:
        print(f"listening on {server.server_address[1]}", flush=True)
        server.serve_forever()

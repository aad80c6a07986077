"""pypiserver, a real Python package index, served over TLS, for the pip
cases of the compatibility suite (tests/compat.rs).

Run: python pypi_tls.py PACKAGES_DIR CERT KEY [ADDR]   (ADDR: ip:port,
default 127.0.0.1:0)

It writes one wheel, vigil_probe 1.0 (a module whose ANSWER is 42), into
PACKAGES_DIR, then prints `listening on <port>` and serves pypiserver's
WSGI app over HTTPS (TLS 1.2+, CERT/KEY in PEM) with a threaded wsgiref
server until killed.
"""

import base64
import hashlib
import pathlib
import socketserver
import ssl
import sys
import zipfile
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pypiserver

FILES = {
    "vigil_probe/__init__.py": b'"""A probe package."""\nANSWER = 42\n',
    "vigil_probe-1.0.dist-info/METADATA": (
        b"Metadata-Version: 2.1\nName: vigil-probe\nVersion: 1.0\n"
        b"Summary: a probe package for Vigil's compatibility tests\n"
    ),
    "vigil_probe-1.0.dist-info/WHEEL": (
        b"Wheel-Version: 1.0\nGenerator: vigil-compat\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n"
    ),
}


def write_wheel(directory: pathlib.Path) -> None:
    """Writes vigil_probe-1.0-py3-none-any.whl with its RECORD."""
    record = []
    for name, data in FILES.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(data)}")
    record.append("vigil_probe-1.0.dist-info/RECORD,,")
    wheel = directory / "vigil_probe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in FILES.items():
            zf.writestr(name, data)
        zf.writestr("vigil_probe-1.0.dist-info/RECORD", "\n".join(record) + "\n")


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (wsgiref's name)
        sys.stderr.write("pypi: " + (format % args) + "\n")


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


def main() -> None:
    packages, cert, key = (pathlib.Path(a) for a in sys.argv[1:4])
    host, _, port = (sys.argv[4] if len(sys.argv) > 4 else "127.0.0.1:0").rpartition(":")
    packages.mkdir(parents=True, exist_ok=True)
    write_wheel(packages)
    app = pypiserver.app(roots=[str(packages)])
    server = make_server(host, int(port), app, ThreadingWSGIServer, QuietHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"listening on {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

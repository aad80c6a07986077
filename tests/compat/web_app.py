"""An ASGI app served by Hypercorn (a real HTTP/1.1 and h2c server) for the
curl cases of the compatibility suite (tests/compat.rs).

Run: (cd tests/compat && python -m hypercorn --bind 127.0.0.1:0 web_app:app)

Routes:
  GET  /hello           200 "hello"
  POST /upload          200 JSON {"bytes": n, "sha256": hex, "chunked": bool}
  GET|HEAD /page        200 with ETag "v1"; 304 when If-None-Match matches
  GET  /empty           204
  GET  /trailers        200 "data" then trailers x-checksum (HTTP/2 with
                        `te: trailers`, as hypercorn requires)
  GET  /events          server-sent events: "one", then waits for
                        /release before "two", so a proxy that buffers the
                        stream makes the client wait forever
  GET  /release         releases /events
"""

import asyncio
import hashlib
import json

released = asyncio.Event()


def header(scope, name):
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def respond(send, status, body=b"", headers=(), more=False):
    await send({"type": "http.response.start", "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in headers]})
    await send({"type": "http.response.body", "body": body, "more_body": more})


async def read_body(receive):
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    path = scope["path"]
    if path == "/hello":
        await respond(send, 200, b"hello", [("content-type", "text/plain")])
    elif path == "/upload":
        body = await read_body(receive)
        answer = {
            "bytes": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "chunked": header(scope, b"transfer-encoding") == "chunked"
            or scope["http_version"] == "2" and header(scope, b"content-length") is None,
        }
        await respond(send, 200, json.dumps(answer).encode(), [("content-type", "application/json")])
    elif path == "/page":
        if header(scope, b"if-none-match") == '"v1"':
            await respond(send, 304, b"", [("etag", '"v1"')])
        else:
            await respond(send, 200, b"page body\n",
                          [("etag", '"v1"'), ("content-type", "text/plain"), ("content-length", "10")])
    elif path == "/empty":
        await respond(send, 204)
    elif path == "/trailers":
        await send({"type": "http.response.start", "status": 200, "trailers": True,
                    "headers": [(b"content-type", b"text/plain"), (b"trailer", b"x-checksum")]})
        await send({"type": "http.response.body", "body": b"data", "more_body": False})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc123")],
                    "more_trailers": False})
    elif path == "/events":
        headers = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
        await respond(send, 200, b"data: one\n\n", headers, more=True)
        await released.wait()
        released.clear()
        await send({"type": "http.response.body", "body": b"data: two\n\n", "more_body": False})
    elif path == "/release":
        released.set()
        await respond(send, 200, b"released")
    else:
        await respond(send, 404, b"not found")

"""A real grpcio client for vigil-proxy's gRPC compatibility test.

Usage: python grpc_client.py TARGET      (e.g. 127.0.0.1:50051)

Runs every case against grpc_server.py and checks each result as a user of
the service would. Prints "ok <case>" per case; on the first failure prints
"FAIL <case>: <detail>" on stderr and exits 1; exits 0 when all pass.

grpcio's C core reads the proxy itself from the environment: the first set of
grpc_proxy, https_proxy, http_proxy (lower case only), minus no_grpc_proxy /
no_proxy, and then tunnels to TARGET with HTTP CONNECT, loopback targets
(127.0.0.1, localhost) included. The test runs it through vigil-proxy that
way, so this script leaves that alone.
"""

import os
import queue
import sys

import grpc

SERVICE = "/vigil.compat.Echo/"
MAX_MESSAGE = 16 * 1024 * 1024
TIMEOUT = 20.0  # seconds, for every call except the deadline case


class CaseFailed(Exception):
    pass


def check(condition, detail):
    if not condition:
        raise CaseFailed(detail)


def case_unary(channel):
    reply = channel.unary_unary(SERVICE + "Unary")(b"hello", timeout=TIMEOUT)
    check(reply == b"echo:hello", f"got {reply!r}")


def case_server_stream(channel):
    call = channel.unary_stream(SERVICE + "ServerStream")(b"5", timeout=TIMEOUT)
    items = list(call)
    want = [f"item-{i}".encode() for i in range(5)]
    check(items == want, f"got {items!r}, want {want!r}")
    check(call.code() == grpc.StatusCode.OK, f"status {call.code()}")


def case_client_stream(channel):
    messages = [b"alpha", b"bravo", b"gamma"]
    reply = channel.stream_unary(SERVICE + "ClientStream")(iter(messages), timeout=TIMEOUT)
    check(reply == b"3:15", f"got {reply!r}, want b'3:15'")


def case_bidi(channel):
    # The request iterator blocks on a queue, so the client's side stays open
    # while it waits for each reply: a proxy that buffers until the end of the
    # request stream makes this time out instead of passing.
    requests = queue.Queue()
    replies = channel.stream_stream(SERVICE + "Bidi")(iter(requests.get, None), timeout=TIMEOUT)
    try:
        for i in range(3):
            message = f"ping-{i}".encode()
            requests.put(message)
            reply = next(replies)
            check(reply == b"bidi:" + message, f"reply {i}: got {reply!r}")
    finally:
        requests.put(None)  # close our side
    rest = list(replies)
    check(rest == [], f"unexpected extra replies {rest!r}")
    check(replies.code() == grpc.StatusCode.OK, f"status {replies.code()}")


def case_deadline(channel):
    try:
        reply = channel.unary_unary(SERVICE + "Slow")(b"", timeout=0.5)
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.DEADLINE_EXCEEDED,
              f"status {e.code()} ({e.details()!r}), want DEADLINE_EXCEEDED")
        return
    raise CaseFailed(f"succeeded with {reply!r}, want DEADLINE_EXCEEDED")


def case_fail(channel):
    try:
        reply = channel.unary_unary(SERVICE + "Fail")(b"", timeout=TIMEOUT)
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.FAILED_PRECONDITION,
              f"status {e.code()} ({e.details()!r}), want FAILED_PRECONDITION")
        check(e.details() == "vigil says no", f"details {e.details()!r}")
        trailers = dict(e.trailing_metadata() or ())
        check(trailers.get("x-reason") == "policy",
              f"trailing metadata {e.trailing_metadata()!r}, want x-reason=policy")
        return
    raise CaseFailed(f"succeeded with {reply!r}, want FAILED_PRECONDITION")


def case_big(channel):
    payload = os.urandom(4 * 1024 * 1024)
    reply = channel.unary_unary(SERVICE + "Big")(payload, timeout=TIMEOUT)
    check(len(reply) == len(payload), f"got {len(reply)} bytes, want {len(payload)}")
    check(reply == payload[::-1], "reply is not the payload reversed")


CASES = [
    ("unary", case_unary),
    ("server_stream", case_server_stream),
    ("client_stream", case_client_stream),
    ("bidi", case_bidi),
    ("deadline", case_deadline),
    ("fail", case_fail),
    ("big", case_big),
]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: grpc_client.py TARGET   (e.g. 127.0.0.1:50051)")
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.max_receive_message_length", MAX_MESSAGE),
    ]
    for var in ("GRPC_PROXY", "HTTPS_PROXY", "HTTP_PROXY"):
        if os.environ.get(var) and not os.environ.get(var.lower()):
            print(f"note: grpcio ignores {var}; only {var.lower()} names its proxy",
                  file=sys.stderr)
    with grpc.insecure_channel(sys.argv[1], options=options) as channel:
        for name, case in CASES:
            try:
                case(channel)
            except CaseFailed as e:
                print(f"FAIL {name}: {e}", file=sys.stderr)
                sys.exit(1)
            except grpc.RpcError as e:
                print(f"FAIL {name}: {e.code()}: {e.details()}", file=sys.stderr)
                sys.exit(1)
            except StopIteration:
                print(f"FAIL {name}: stream ended early", file=sys.stderr)
                sys.exit(1)
            print(f"ok {name}", flush=True)


if __name__ == "__main__":
    main()

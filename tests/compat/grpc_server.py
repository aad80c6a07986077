"""A real grpcio server for vigil-proxy's gRPC compatibility test.

Usage: python grpc_server.py PORT      (PORT 0 picks a free port)

It listens on 127.0.0.1, prints exactly "listening on <port>" on stdout once it
is ready, then serves until it is killed. grpc_client.py runs every case
against it, directly or through the proxy.

The service is vigil.compat.Echo, bytes in and bytes out (no protobuf: the
handlers get and return raw bytes):

  Unary         b"echo:" + request
  ServerStream  request is an ASCII integer N; streams b"item-0" .. b"item-{N-1}"
  ClientStream  b"<count>:<total length>" of the received messages, e.g. b"3:15"
  Bidi          b"bidi:" + msg for each msg, as soon as it arrives
  Fail          FAILED_PRECONDITION "vigil says no" with trailing metadata
                x-reason=policy and no message (a trailers-only response)
  Slow          sleeps 5 s, then b"slow"
  Big           the request reversed (the test sends 4 MiB)
"""

import sys
import time
from concurrent import futures

import grpc

SERVICE = "vigil.compat.Echo"
MAX_MESSAGE = 16 * 1024 * 1024


def unary(request, context):
    return b"echo:" + request


def server_stream(request, context):
    try:
        count = int(request.decode("ascii"))
    except ValueError:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not an integer: {request!r}")
    for i in range(count):
        yield f"item-{i}".encode()


def client_stream(request_iterator, context):
    count = total = 0
    for message in request_iterator:
        count += 1
        total += len(message)
    return f"{count}:{total}".encode()


def bidi(request_iterator, context):
    for message in request_iterator:
        yield b"bidi:" + message


def fail(request, context):
    context.set_trailing_metadata((("x-reason", "policy"),))
    context.abort(grpc.StatusCode.FAILED_PRECONDITION, "vigil says no")


def slow(request, context):
    time.sleep(5)
    return b"slow"


def big(request, context):
    return request[::-1]


def main():
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: grpc_server.py PORT   (0 picks a free port)")

    # No serializers given: requests and responses stay raw bytes.
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Big": grpc.unary_unary_rpc_method_handler(big),
    }
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        handlers=(grpc.method_handlers_generic_handler(SERVICE, handlers),),
        options=(
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
        ),
    )
    try:
        port = server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
    except RuntimeError as e:  # grpcio raises this when it cannot bind
        sys.exit(f"grpc_server: cannot listen on 127.0.0.1:{sys.argv[1]}: {e}")
    if port == 0:  # older grpcio returns 0 instead of raising
        sys.exit(f"grpc_server: cannot listen on 127.0.0.1:{sys.argv[1]}")
    server.start()
    print(f"listening on {port}", flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(grace=None)


if __name__ == "__main__":
    main()

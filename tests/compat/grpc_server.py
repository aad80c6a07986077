"""A real grpcio server for vigil-proxy's gRPC compatibility test.

Usage: python grpc_server.py PORT         (on 127.0.0.1; PORT 0 picks a free one)
       python grpc_server.py HOST:PORT    (another address, e.g. in a network namespace)

It listens there, prints exactly "listening on <port>" on stdout once it
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
    host, _, port = sys.argv[1].rpartition(":") if len(sys.argv) == 2 else ("", "", "")
    if not port.isdigit():
        sys.exit("usage: grpc_server.py [HOST:]PORT   (HOST: 127.0.0.1; PORT 0: any)")
    address = f"{host or '127.0.0.1'}:{port}"

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
            # grpcio sets SO_REUSEPORT by default, so a taken port would be
            # shared silently instead of failing.
            ("grpc.so_reuseport", 0),
        ),
    )
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:  # grpcio raises this when it cannot bind
        sys.exit(f"grpc_server: cannot listen on {address}: {e}")
    if bound == 0:  # older grpcio returns 0 instead of raising
        sys.exit(f"grpc_server: cannot listen on {address}")
    server.start()
    print(f"listening on {bound}", flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(grace=None)


if __name__ == "__main__":
    main()

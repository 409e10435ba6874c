#!/usr/bin/python3
"""A real gRPC origin (Debian's python3-grpcio) for the scenario tests.

It serves, on 127.0.0.1:PORT over h2c:
  grpc.health.v1.Health/Check   service ""        -> SERVING
                                service "sick"    -> NOT_SERVING
                                any other service -> NOT_FOUND (as grpc's health servicer does)
  coldbrew.test.Echo/Unary          echoes the request message
  coldbrew.test.Echo/ServerStream   request "N" -> N messages "0".."N-1"
  coldbrew.test.Echo/ClientStream   the request messages joined by ","
  coldbrew.test.Echo/Bidi           echoes each message as it arrives
  coldbrew.test.Echo/Sleep          request "MS": answers after MS ms (deadlines)
  coldbrew.test.Echo/DieMidStream   sends "before", then the process exits

Messages are raw bytes (no serializer): the tests care about the transport.
With --no-health the Health service is not registered (UNIMPLEMENTED).
Usage: grpc_origin.py PORT [--no-health]
"""
import os, sys, time
from concurrent import futures

import grpc

SERVING, NOT_SERVING = b"\x08\x01", b"\x08\x02"


def service_name(req):
    # HealthCheckRequest{string service = 1}: tag 0x0a, one-byte length here.
    return req[2:2 + req[1]].decode() if len(req) >= 2 and req[0] == 0x0A else ""


def check(req, ctx):
    name = service_name(req)
    if name == "":
        return SERVING
    if name == "sick":
        return NOT_SERVING
    ctx.abort(grpc.StatusCode.NOT_FOUND, "unknown service")


def unary(req, ctx):
    return req


def server_stream(req, ctx):
    for i in range(int(req or b"0")):
        yield str(i).encode()


def client_stream(it, ctx):
    return b",".join(it)


def bidi(it, ctx):
    for m in it:
        yield m


def sleep(req, ctx):
    end = time.time() + int(req or b"0") / 1000
    while time.time() < end and ctx.is_active():
        time.sleep(0.01)
    return b"slept"


def die_mid_stream(req, ctx):
    yield b"before"
    time.sleep(0.2)
    os._exit(3)  # the user container dies with the stream open


def main():
    port = int(sys.argv[1])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    handlers = [grpc.method_handlers_generic_handler("coldbrew.test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Sleep": grpc.unary_unary_rpc_method_handler(sleep),
        "DieMidStream": grpc.unary_stream_rpc_method_handler(die_mid_stream),
    })]
    if "--no-health" not in sys.argv:
        handlers.append(grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(check)}))
    server.add_generic_rpc_handlers(handlers)
    server.add_insecure_port("127.0.0.1:%d" % port)
    server.start()
    print("grpc origin on %d" % port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""barista: coldbrew's gRPC example (a Knative Service whose port is named
h2c). Serves coldbrew.example.Barista and grpc.health.v1.Health on $PORT
over h2c, with Debian's python3-grpcio; the messages are generated at first
start from barista.proto with python3-grpc-tools, into a cache directory.

  barista.py serve                       what the manifest runs
  barista.py order ADDR [DRINK] [CUPS]   a unary call  (ADDR host:port)
  barista.py pour  ADDR [DRINK] [CUPS]   a server-streaming call
Clients take --authority HOST to pick the service behind coldbrew's ingress."""
import hashlib, os, sys, tempfile, time
from concurrent import futures

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))


def messages():
    """barista_pb2, generated once per version of barista.proto."""
    src = os.path.join(HERE, "barista.proto")
    tag = hashlib.sha256(open(src, "rb").read()).hexdigest()[:12]
    out = os.path.join(tempfile.gettempdir(), "coldbrew-barista-" + tag)
    if not os.path.exists(os.path.join(out, "barista_pb2.py")):
        from grpc_tools import protoc
        os.makedirs(out, exist_ok=True)
        if protoc.main(["protoc", "-I" + HERE, "--python_out=" + out, src]) != 0:
            sys.exit("barista: cannot generate messages from barista.proto")
    sys.path.insert(0, out)
    import barista_pb2
    return barista_pb2


pb = messages()
SERVING = b"\x08\x01"  # grpc.health.v1.HealthCheckResponse{status: SERVING}


def serve():
    revision = os.environ.get("K_REVISION", "local")

    def order(req, ctx):
        if req.cups < 0:
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "cups must not be negative")
        return pb.OrderReply(message="%d x %s" % (req.cups or 1, req.drink or "coffee"), served_by=revision)

    def pour(req, ctx):
        for i in range(req.cups or 1):
            yield pb.OrderReply(message="cup %d of %s" % (i + 1, req.drink or "coffee"), served_by=revision)
            time.sleep(0.05)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers([
        grpc.method_handlers_generic_handler("coldbrew.example.Barista", {
            "Order": grpc.unary_unary_rpc_method_handler(
                order, pb.OrderRequest.FromString, pb.OrderReply.SerializeToString),
            "Pour": grpc.unary_stream_rpc_method_handler(
                pour, pb.OrderRequest.FromString, pb.OrderReply.SerializeToString),
        }),
        grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(lambda req, ctx: SERVING),
        }),
    ])
    port = int(os.environ.get("PORT", "8080"))
    server.add_insecure_port("127.0.0.1:%d" % port)
    server.start()
    print("barista: serving gRPC on 127.0.0.1:%d (revision %s)" % (port, revision), flush=True)
    server.wait_for_termination()


def client(kind, argv):
    authority = None
    if "--authority" in argv:
        i = argv.index("--authority")
        authority = argv[i + 1]
        del argv[i:i + 2]
    addr, drink = argv[0], argv[1] if len(argv) > 1 else "coffee"
    cups = int(argv[2]) if len(argv) > 2 else 1
    opts = [("grpc.default_authority", authority)] if authority else []
    with grpc.insecure_channel(addr, options=opts) as ch:
        req = pb.OrderRequest(drink=drink, cups=cups)
        if kind == "order":
            call = ch.unary_unary("/coldbrew.example.Barista/Order", pb.OrderRequest.SerializeToString,
                                  pb.OrderReply.FromString)
            r = call(req, timeout=30)
            print("%s (served by %s)" % (r.message, r.served_by))
        else:
            call = ch.unary_stream("/coldbrew.example.Barista/Pour", pb.OrderRequest.SerializeToString,
                                   pb.OrderReply.FromString)
            for r in call(req, timeout=30):
                print("%s (served by %s)" % (r.message, r.served_by), flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] == "serve":
        serve()
    elif sys.argv[1] in ("order", "pour") and len(sys.argv) > 2:
        client(sys.argv[1], sys.argv[2:])
    else:
        sys.exit(__doc__)

#!/usr/bin/python3
"""A real OTLP receiver for the scenario tests: what an OpenTelemetry
collector's otlp receiver does, in the small.

  HTTP  127.0.0.1:HTTP_PORT   POST /v1/traces, /v1/metrics
                              (Content-Type application/x-protobuf)
  gRPC  127.0.0.1:GRPC_PORT   opentelemetry.proto.collector.trace.v1.TraceService/Export
                              opentelemetry.proto.collector.metrics.v1.MetricsService/Export
                              (Debian's python3-grpcio, h2c)

The protobuf messages are decoded by hand from the wire format with the
field numbers of opentelemetry-proto (an independent decoder: it shares
nothing with coldbrew's common/proto/otlp_*.proto or protobuf-c). Unknown
fields are an error, so a wrong field number in coldbrew shows.

Control and inspection, on the HTTP port:
  GET /_mode?m=ok|refuse|hang|reset|bodiless   how to answer exports from now on:
        refuse  HTTP 503 / gRPC UNAVAILABLE
        hang    never answer (bounded: 60 s, or until the mode changes)
        reset   HTTP: the connection is reset (RST); gRPC: the TCP
                connection is reset (the gRPC port is a relay in front of
                the grpcio server, which drops the connection with RST)
        bodiless  gRPC only: response headers, then trailers with
                grpc-status 14 and no message between (legal: a call may
                fail after its headers); answered by the relay itself
                with python3-h2
  GET /_spans     every span decoded so far, JSON (ids in hex)
  GET /_metrics   every metric data point decoded so far, JSON
  GET /_counts    requests seen per protocol and signal, and per answer

Usage: otlp_receiver.py HTTP_PORT GRPC_PORT
"""
import json, socket, struct, sys, threading, time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import grpc
import h2.config, h2.connection, h2.events, h2.exceptions

STATE = {"mode": "ok"}
MODE_CHANGED = threading.Condition()
LOCK = threading.Lock()
SPANS, POINTS = [], []
COUNTS = {}
ERRORS = []


def count(key):
    with LOCK:
        COUNTS[key] = COUNTS.get(key, 0) + 1


# ---------------------------------------------------------------- wire format

def varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return v, i


def fields(b):
    """(field, wire type, raw value) of one message; raises on garbage."""
    i = 0
    while i < len(b):
        tag, i = varint(b, i)
        f, wt = tag >> 3, tag & 7
        if f == 0:
            raise ValueError("field number 0")
        if wt == 0:
            v, i = varint(b, i)
        elif wt == 1:
            v = b[i:i + 8]
            i += 8
        elif wt == 2:
            n, i = varint(b, i)
            v = b[i:i + n]
            i += n
        elif wt == 5:
            v = b[i:i + 4]
            i += 4
        else:
            raise ValueError("wire type %d" % wt)
        if i > len(b):
            raise ValueError("truncated")
        yield f, wt, v


def want(wt, expect, what):
    if wt != expect:
        raise ValueError("%s: wire type %d, want %d" % (what, wt, expect))


def s64(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def fixed64(v):
    return struct.unpack("<Q", v)[0]


def dbl(v):
    return struct.unpack("<d", v)[0]


def any_value(b):
    for f, wt, v in fields(b):
        if f == 1:
            want(wt, 2, "AnyValue.string_value"); return v.decode()
        if f == 2:
            want(wt, 0, "AnyValue.bool_value"); return bool(v)
        if f == 3:
            want(wt, 0, "AnyValue.int_value"); return s64(v)
        if f == 4:
            want(wt, 1, "AnyValue.double_value"); return dbl(v)
        if f == 5:
            return [any_value(x) for g, _, x in fields(v) if g == 1]
        if f == 7:
            return v.hex()
        raise ValueError("AnyValue field %d" % f)
    return None


def key_values(raws):
    out = {}
    for b in raws:
        k = val = None
        for f, wt, v in fields(b):
            if f == 1:
                want(wt, 2, "KeyValue.key"); k = v.decode()
            elif f == 2:
                want(wt, 2, "KeyValue.value"); val = any_value(v)
            else:
                raise ValueError("KeyValue field %d" % f)
        out[k] = val
    return out


def resource(b):
    attrs = []
    for f, wt, v in fields(b):
        if f == 1:
            attrs.append(v)
        elif f != 2:
            raise ValueError("Resource field %d" % f)
    return key_values(attrs)


def scope(b):
    out = {}
    for f, wt, v in fields(b):
        if f == 1:
            out["name"] = v.decode()
        elif f == 2:
            out["version"] = v.decode()
        elif f not in (3, 4):
            raise ValueError("InstrumentationScope field %d" % f)
    return out


def event(b):
    e, attrs = {}, []
    for f, wt, v in fields(b):
        if f == 1:
            want(wt, 1, "Event.time_unix_nano"); e["time"] = fixed64(v)
        elif f == 2:
            e["name"] = v.decode()
        elif f == 3:
            attrs.append(v)
        elif f == 4:
            e["dropped_attributes_count"] = v
        else:
            raise ValueError("Event field %d" % f)
    e["attributes"] = key_values(attrs)
    return e


def status(b):
    st = {"code": 0, "message": ""}
    for f, wt, v in fields(b):
        if f == 2:
            st["message"] = v.decode()
        elif f == 3:
            want(wt, 0, "Status.code"); st["code"] = v
        else:
            raise ValueError("Status field %d" % f)
    return st


SPAN_FIELDS = {1: "trace_id", 2: "span_id", 4: "parent_span_id"}


def span(b):
    s = {"trace_id": "", "span_id": "", "parent_span_id": "", "trace_state": "", "name": "",
         "kind": 0, "flags": 0, "events": [], "status": None, "dropped_attributes_count": 0,
         "dropped_events_count": 0}
    attrs = []
    for f, wt, v in fields(b):
        if f in SPAN_FIELDS:
            want(wt, 2, SPAN_FIELDS[f]); s[SPAN_FIELDS[f]] = v.hex()
        elif f == 3:
            s["trace_state"] = v.decode()
        elif f == 5:
            s["name"] = v.decode()
        elif f == 6:
            want(wt, 0, "Span.kind"); s["kind"] = v
        elif f == 7:
            want(wt, 1, "Span.start_time_unix_nano"); s["start"] = fixed64(v)
        elif f == 8:
            want(wt, 1, "Span.end_time_unix_nano"); s["end"] = fixed64(v)
        elif f == 9:
            attrs.append(v)
        elif f == 10:
            s["dropped_attributes_count"] = v
        elif f == 11:
            s["events"].append(event(v))
        elif f == 12:
            s["dropped_events_count"] = v
        elif f == 15:
            s["status"] = status(v)
        elif f == 16:
            want(wt, 5, "Span.flags"); s["flags"] = struct.unpack("<I", v)[0]
        else:
            raise ValueError("Span field %d" % f)
    s["attributes"] = key_values(attrs)
    return s


def decode_traces(b, proto):
    out = []
    for f, wt, rs in fields(b):
        if f != 1:
            raise ValueError("ExportTraceServiceRequest field %d" % f)
        res = {}
        for g, _, v in fields(rs):
            if g == 1:
                res = resource(v)
            elif g == 2:
                sc = {}
                for h, _, w in fields(v):
                    if h == 1:
                        sc = scope(w)
                    elif h == 2:
                        sp = span(w)
                        sp["resource"], sp["scope"], sp["via"] = res, sc, proto
                        out.append(sp)
                    elif h != 3:
                        raise ValueError("ScopeSpans field %d" % h)
            elif g != 3:
                raise ValueError("ResourceSpans field %d" % g)
    return out


def packed(v, wt, size, fmt):
    if wt == 2:
        return list(struct.unpack("<%d%s" % (len(v) // size, fmt), v))
    return [struct.unpack("<" + fmt, v)[0]]


def number_point(b):
    p, attrs = {}, []
    for f, wt, v in fields(b):
        if f == 7:
            attrs.append(v)
        elif f == 2:
            p["start"] = fixed64(v)
        elif f == 3:
            p["time"] = fixed64(v)
        elif f == 4:
            want(wt, 1, "as_double"); p["value"] = dbl(v)
        elif f == 6:
            want(wt, 1, "as_int"); p["value"] = struct.unpack("<q", v)[0]
        elif f != 8:
            raise ValueError("NumberDataPoint field %d" % f)
    p["attributes"] = key_values(attrs)
    return p


def histogram_point(b):
    p, attrs = {"bucket_counts": [], "explicit_bounds": []}, []
    for f, wt, v in fields(b):
        if f == 9:
            attrs.append(v)
        elif f == 2:
            p["start"] = fixed64(v)
        elif f == 3:
            p["time"] = fixed64(v)
        elif f == 4:
            want(wt, 1, "count"); p["count"] = fixed64(v)
        elif f == 5:
            p["sum"] = dbl(v)
        elif f == 6:
            p["bucket_counts"] += packed(v, wt, 8, "Q")
        elif f == 7:
            p["explicit_bounds"] += packed(v, wt, 8, "d")
        elif f == 11:
            p["min"] = dbl(v)
        elif f == 12:
            p["max"] = dbl(v)
        elif f != 10:
            raise ValueError("HistogramDataPoint field %d" % f)
    p["attributes"] = key_values(attrs)
    return p


def metric(b):
    m = {}
    for f, wt, v in fields(b):
        if f == 1:
            m["name"] = v.decode()
        elif f == 2:
            m["description"] = v.decode()
        elif f == 3:
            m["unit"] = v.decode()
        elif f in (5, 7, 9):
            m["type"] = {5: "gauge", 7: "sum", 9: "histogram"}[f]
            m["points"] = []
            for g, gwt, w in fields(v):
                if g == 1:
                    m["points"].append(histogram_point(w) if f == 9 else number_point(w))
                elif g == 2:
                    m["temporality"] = w
                elif g == 3 and f == 7:
                    m["monotonic"] = bool(w)
                else:
                    raise ValueError("metric data field %d" % g)
        else:
            raise ValueError("Metric field %d" % f)
    return m


def decode_metrics(b, proto):
    out = []
    for f, _, rm in fields(b):
        if f != 1:
            raise ValueError("ExportMetricsServiceRequest field %d" % f)
        res = {}
        for g, _, v in fields(rm):
            if g == 1:
                res = resource(v)
            elif g == 2:
                for h, _, w in fields(v):
                    if h == 2:
                        m = metric(w)
                        m["resource"], m["via"] = res, proto
                        out.append(m)
    return out


def record(signal, body, proto):
    try:
        if signal == "traces":
            got = decode_traces(body, proto)
            with LOCK:
                SPANS.extend(got)
        else:
            got = decode_metrics(body, proto)
            with LOCK:
                POINTS.extend(got)
    except Exception as e:  # a decoding failure is a test failure: keep it
        with LOCK:
            ERRORS.append("%s %s: %r" % (proto, signal, e))
        raise


def wait_while_hang():
    end = time.time() + 60
    with MODE_CHANGED:
        while STATE["mode"] == "hang" and time.time() < end:
            MODE_CHANGED.wait(0.5)


# ---------------------------------------------------------------- HTTP

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, code, body=b"", ctype="application/x-protobuf"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        u = urlparse(self.path)
        if u.path == "/_mode":
            with MODE_CHANGED:
                STATE["mode"] = parse_qs(u.query)["m"][0]
                MODE_CHANGED.notify_all()
            return self.reply(200, b"ok", "text/plain")
        with LOCK:
            data = {"/_spans": SPANS, "/_metrics": POINTS,
                    "/_counts": dict(COUNTS, errors=ERRORS)}.get(u.path)
            body = json.dumps(data).encode() if data is not None else None
        if body is None:
            return self.reply(404, b"", "text/plain")
        self.reply(200, body, "application/json")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        signal = {"/v1/traces": "traces", "/v1/metrics": "metrics"}.get(self.path)
        if signal is None or self.headers.get("Content-Type") != "application/x-protobuf":
            count("http bad request")
            return self.reply(400, b"", "text/plain")
        mode = STATE["mode"]
        count("http %s %s" % (signal, mode))
        if mode == "refuse":
            return self.reply(503, b"", "text/plain")
        if mode == "hang":
            wait_while_hang()
            self.close_connection = True
            return
        if mode == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        try:
            record(signal, body, "http")
        except Exception:
            return self.reply(400, b"", "text/plain")
        # An empty Export*ServiceResponse: full success.
        self.reply(200, b"")


# ---------------------------------------------------------------- gRPC

def export(signal):
    def handler(req, ctx):
        mode = STATE["mode"]
        count("grpc %s %s" % (signal, mode))
        if mode == "refuse":
            ctx.abort(grpc.StatusCode.UNAVAILABLE, "refusing as told")
        if mode == "hang":
            wait_while_hang()
            ctx.abort(grpc.StatusCode.UNAVAILABLE, "hung")
        try:
            record(signal, req, "grpc")
        except Exception as e:
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "undecodable: %r" % e)
        return b""
    return handler


def relay(front_port, back_port):
    """The gRPC port: bytes relayed to grpcio, or connections reset."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", front_port))
    ls.listen(64)

    def pump(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def bodiless(c):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        c.settimeout(10)
        try:
            c.sendall(conn.data_to_send())
            for _ in range(10000):  # bounded: one connection's calls
                data = c.recv(65536)
                if not data:
                    break
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        count("grpc bodiless")
                        conn.send_headers(ev.stream_id, [(":status", "200"), ("content-type", "application/grpc")])
                        conn.send_headers(ev.stream_id, [("grpc-status", "14"),
                                                         ("grpc-message", "failing after the headers, as told")],
                                          end_stream=True)
                c.sendall(conn.data_to_send())
        except (OSError, h2.exceptions.ProtocolError):
            pass
        c.close()

    def serve(c):
        if STATE["mode"] == "bodiless":
            return bodiless(c)
        if STATE["mode"] == "reset":
            count("grpc reset")
            # Read the preface first, so the reset hits a call in progress.
            c.settimeout(2)
            try:
                c.recv(65536)
            except OSError:
                pass
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
            return
        try:
            b = socket.create_connection(("127.0.0.1", back_port), 5)
        except OSError:
            c.close()
            return
        threading.Thread(target=pump, args=(c, b), daemon=True).start()
        threading.Thread(target=pump, args=(b, c), daemon=True).start()

    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def main():
    http_port, grpc_port = int(sys.argv[1]), int(sys.argv[2])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers([
        grpc.method_handlers_generic_handler("opentelemetry.proto.collector.trace.v1.TraceService", {
            "Export": grpc.unary_unary_rpc_method_handler(export("traces"))}),
        grpc.method_handlers_generic_handler("opentelemetry.proto.collector.metrics.v1.MetricsService", {
            "Export": grpc.unary_unary_rpc_method_handler(export("metrics"))}),
    ])
    back = server.add_insecure_port("127.0.0.1:0")
    server.start()
    threading.Thread(target=relay, args=(grpc_port, back), daemon=True).start()
    httpd = ThreadingHTTPServer(("127.0.0.1", http_port), Handler)
    httpd.daemon_threads = True
    httpd.serve_forever()


if __name__ == "__main__":
    main()

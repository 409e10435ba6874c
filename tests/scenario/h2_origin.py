#!/usr/bin/python3
"""A real h2c origin (HTTP/2 with prior knowledge, Debian's python3-h2) for
the scenario tests: the user container of an h2c revision.

Routes (any method):
  /                 JSON: protocol, method, path, authority, headers (in order), body size
  /sleep?ms=N       answer after N ms
  /status?code=N    answer with status N
  /drip?n=N&ms=M    N DATA frames M ms apart, each flushed at once
  /trailers         a body, then trailers x-checksum and grpc-status: 0
  /big?bytes=N      N bytes of body
  /crash            sends a head and some DATA, then closes the connection
  /reset            sends a head, then RST_STREAM INTERNAL_ERROR
  /probe?code=N     answer N (default 200) and record the request's headers (for /stats)
  /stats            JSON: requests seen, peak concurrency, connections accepted, probes
Usage: h2_origin.py PORT [MAX_STREAMS]
MAX_STREAMS is the SETTINGS_MAX_CONCURRENT_STREAMS it announces (h2's
default, 100, when not given; the benchmark's memory measure holds 1,000).
"""
import asyncio, json, sys, time, urllib.parse

import h2.config, h2.connection, h2.events, h2.errors, h2.settings

MAX_STREAMS = int(sys.argv[2]) if len(sys.argv) > 2 else 0
STATS = {"requests": 0, "in_flight": 0, "max_in_flight": 0, "connections": 0, "probes": []}


class Conn:
    def __init__(self, reader, writer):
        self.r, self.w = reader, writer
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        if MAX_STREAMS:
            self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 2 ** 16})
        self.streams = {}
        self.flow = {}

    async def flush(self):
        data = self.h2.data_to_send()
        if data:
            self.w.write(data)
            await self.w.drain()

    async def send_body(self, sid, body, end=True):
        while body:
            while self.h2.local_flow_control_window(sid) < 1:
                ev = self.flow.setdefault(sid, asyncio.Event())
                ev.clear()
                await ev.wait()
            n = min(len(body), self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            self.h2.send_data(sid, body[:n])
            body = body[n:]
            await self.flush()
        if end:
            self.h2.end_stream(sid)
            await self.flush()

    async def handle(self, sid, headers, body):
        STATS["requests"] += 1
        STATS["in_flight"] += 1
        STATS["max_in_flight"] = max(STATS["max_in_flight"], STATS["in_flight"])
        try:
            await self.route(sid, headers, body)
        except Exception as e:  # a reset stream, a closed connection
            print("origin: stream %d: %r" % (sid, e), file=sys.stderr, flush=True)
        finally:
            STATS["in_flight"] -= 1

    async def route(self, sid, headers, body):
        h = dict(headers)
        u = urllib.parse.urlsplit(h.get(":path", "/"))
        q = dict(urllib.parse.parse_qsl(u.query))
        path = u.path
        if path == "/sleep":
            await asyncio.sleep(int(q.get("ms", "100")) / 1000)
        if path == "/probe":
            STATS["probes"].append([[k, v] for k, v in headers if not k.startswith(":")][:16])
            del STATS["probes"][:-20]
            self.h2.send_headers(sid, [(":status", q.get("code", "200"))], end_stream=True)
            return await self.flush()
        if path == "/status":
            self.h2.send_headers(sid, [(":status", q.get("code", "200"))], end_stream=True)
            return await self.flush()
        if path == "/drip":
            self.h2.send_headers(sid, [(":status", "200"), ("content-type", "text/plain")])
            await self.flush()
            for i in range(int(q.get("n", "3"))):
                await self.send_body(sid, b"drip %d %.6f\n" % (i, time.time()), end=False)
                await asyncio.sleep(int(q.get("ms", "100")) / 1000)
            return await self.send_body(sid, b"", end=True)
        if path == "/trailers":
            self.h2.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
            await self.send_body(sid, b"payload", end=False)
            self.h2.send_headers(sid, [("x-checksum", "7"), ("grpc-status", "0")], end_stream=True)
            return await self.flush()
        if path == "/big":
            n = int(q.get("bytes", "1000000"))
            self.h2.send_headers(sid, [(":status", "200"), ("content-length", str(n))])
            return await self.send_body(sid, b"x" * n)
        if path == "/crash":
            self.h2.send_headers(sid, [(":status", "200")])
            self.h2.send_data(sid, b"partial")
            await self.flush()
            await asyncio.sleep(0.05)
            self.w.close()
            return
        if path == "/reset":
            self.h2.send_headers(sid, [(":status", "200")])
            await self.flush()
            self.h2.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
            return await self.flush()
        if path == "/stats":
            out = json.dumps(STATS).encode()
        else:
            out = json.dumps({"protocol": "HTTP/2.0", "method": h.get(":method"), "path": h.get(":path"),
                              "authority": h.get(":authority"),
                              "headers": [[k, v] for k, v in headers if not k.startswith(":")],
                              "body_bytes": len(body)}).encode()
        self.h2.send_headers(sid, [(":status", "200"), ("content-type", "application/json"),
                                   ("content-length", str(len(out)))])
        await self.send_body(sid, out)

    async def run(self):
        STATS["connections"] += 1
        self.h2.initiate_connection()
        await self.flush()
        while True:
            data = await self.r.read(65536)
            if not data:
                break
            try:
                events = self.h2.receive_data(data)
            except Exception as e:
                print("origin: protocol error %r" % e, file=sys.stderr, flush=True)
                break
            for ev in events:
                if isinstance(ev, h2.events.RequestReceived):
                    self.streams[ev.stream_id] = (ev.headers, bytearray())
                    if ev.stream_ended:
                        hd, b = self.streams.pop(ev.stream_id)
                        asyncio.ensure_future(self.handle(ev.stream_id, hd, bytes(b)))
                elif isinstance(ev, h2.events.DataReceived):
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    if ev.stream_id in self.streams:
                        self.streams[ev.stream_id][1].extend(ev.data)
                    if ev.stream_ended and ev.stream_id in self.streams:
                        hd, b = self.streams.pop(ev.stream_id)
                        asyncio.ensure_future(self.handle(ev.stream_id, hd, bytes(b)))
                elif isinstance(ev, h2.events.StreamEnded):
                    if ev.stream_id in self.streams:
                        hd, b = self.streams.pop(ev.stream_id)
                        asyncio.ensure_future(self.handle(ev.stream_id, hd, bytes(b)))
                elif isinstance(ev, h2.events.WindowUpdated):
                    for sid, e in list(self.flow.items()):
                        if ev.stream_id in (0, sid):
                            e.set()
            await self.flush()
        self.w.close()


async def main():
    port = int(sys.argv[1])

    async def on_conn(r, w):
        await Conn(r, w).run()
    server = await asyncio.start_server(on_conn, "127.0.0.1", port, backlog=1024)
    print("h2 origin on %d" % port, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())

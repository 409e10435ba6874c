#!/usr/bin/python3
"""A real HTTP/1.1 origin for the scenario tests (the "user container").

asyncio, standard library only. It speaks plain HTTP/1.1 with keep-alive,
Content-Length and chunked request bodies, and has routes that misbehave on
purpose:

  /                   JSON echo of method, target, headers (in order), body size and sha256
  /sleep?ms=N         answer after N ms
  /status?code=N      answer with status N
  /sse?n=N&ms=M       text/event-stream, N events M ms apart
  /chunked            chunked body with a trailer
  /unknown-length     body delimited by connection close
  /big?bytes=N        N bytes of body (Content-Length)
  /crash              promises 1000 bytes, sends 10, closes
  /crash-chunked      sends one chunk, closes without the last chunk
  /slow-start?ms=N    head after N ms
  /drip?n=N&ms=M      chunked, one chunk every M ms
  /close-after        answers, then closes the connection 50 ms later (keep-alive race)
  /ws                 websocket echo (RFC 6455, text and binary, close handshake)
  /stats              JSON: requests seen, aborted (client vanished) count, peak /sleep concurrency
Usage: origin.py PORT
"""
import asyncio, base64, hashlib, json, os, sys, time, urllib.parse

STATS = {"requests": 0, "aborted": 0, "in_flight": 0, "max_in_flight": 0}


async def read_head(reader):
    data = await reader.readuntil(b"\r\n\r\n")
    lines = data.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = []
    for l in lines[1:]:
        if l:
            k, v = l.split(":", 1)
            headers.append((k, v.strip()))
    return method, target, version, headers


def hget(headers, name):
    for k, v in headers:
        if k.lower() == name.lower():
            return v
    return None


async def copy_exact(reader, left, sink):
    while left:
        chunk = await reader.read(min(left, 1 << 16))
        if not chunk:
            raise ConnectionError("eof in body")
        sink(chunk)
        left -= len(chunk)


async def read_body(reader, headers, sink):
    te = hget(headers, "transfer-encoding")
    if te and "chunked" in te.lower():
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return
            await copy_exact(reader, size, sink)
            await reader.readexactly(2)
    cl = hget(headers, "content-length")
    if cl:
        await copy_exact(reader, int(cl), sink)


def head(status, headers):
    out = "HTTP/1.1 %d X\r\n" % status
    for k, v in headers:
        out += "%s: %s\r\n" % (k, v)
    return (out + "\r\n").encode()


async def websocket(reader, writer, headers):
    key = hget(headers, "sec-websocket-key")
    acc = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    writer.write(head(101, [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", acc)]))
    await writer.drain()
    while True:
        b = await reader.readexactly(2)
        op, ln = b[0] & 0x0F, b[1] & 0x7F
        masked = b[1] & 0x80
        if ln == 126:
            ln = int.from_bytes(await reader.readexactly(2), "big")
        elif ln == 127:
            ln = int.from_bytes(await reader.readexactly(8), "big")
        mask = await reader.readexactly(4) if masked else b"\0\0\0\0"
        payload = bytearray(await reader.readexactly(ln))
        for i in range(ln):
            payload[i] ^= mask[i % 4]
        if ln < 126:
            hdr = bytes([0x80 | op, ln])
        elif ln < 65536:
            hdr = bytes([0x80 | op, 126]) + ln.to_bytes(2, "big")
        else:
            hdr = bytes([0x80 | op, 127]) + ln.to_bytes(8, "big")
        writer.write(hdr + bytes(payload))
        await writer.drain()
        if op == 8:
            return


async def handle(reader, writer):
    try:
        while True:
            try:
                method, target, version, headers = await read_head(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            STATS["requests"] += 1
            url = urllib.parse.urlsplit(target)
            q = dict(urllib.parse.parse_qsl(url.query))
            path = url.path
            h = hashlib.sha256()
            size = [0]

            def sink(c):
                h.update(c)
                size[0] += len(c)

            if path == "/ws" and hget(headers, "upgrade"):
                await websocket(reader, writer, headers)
                return
            await read_body(reader, headers, sink)
            if path == "/sleep":
                STATS["in_flight"] += 1
                STATS["max_in_flight"] = max(STATS["max_in_flight"], STATS["in_flight"])
                try:
                    await asyncio.wait_for(reader.read(1), int(q.get("ms", "100")) / 1000)
                    # the proxy closed our connection: the client went away
                    STATS["aborted"] += 1
                    return
                except asyncio.TimeoutError:
                    pass
                finally:
                    STATS["in_flight"] -= 1
            if path == "/status":
                body = b"status\n"
                writer.write(head(int(q["code"]), [("Content-Length", len(body))]) + body)
            elif path == "/stats":
                body = json.dumps(STATS).encode()
                writer.write(head(200, [("Content-Length", len(body)), ("Content-Type", "application/json")]) + body)
            elif path == "/sse":
                writer.write(head(200, [("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked")]))
                for i in range(int(q.get("n", "3"))):
                    ev = ("data: event %d\n\n" % i).encode()
                    writer.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                    await writer.drain()
                    await asyncio.sleep(int(q.get("ms", "200")) / 1000)
                writer.write(b"0\r\n\r\n")
            elif path == "/drip":
                writer.write(head(200, [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")]))
                for i in range(int(q.get("n", "3"))):
                    writer.write(b"5\r\ndrip\n\r\n")
                    await writer.drain()
                    await asyncio.sleep(int(q.get("ms", "200")) / 1000)
                writer.write(b"0\r\n\r\n")
            elif path == "/chunked":
                writer.write(head(200, [("Transfer-Encoding", "chunked"), ("Trailer", "X-Checksum")]))
                writer.write(b"6\r\nhello \r\n5\r\nworld\r\n0\r\nX-Checksum: 42\r\n\r\n")
            elif path == "/unknown-length":
                writer.write(head(200, [("Content-Type", "text/plain"), ("Connection", "close")]) + b"until close\n")
                await writer.drain()
                writer.close()
                return
            elif path == "/big":
                n = int(q.get("bytes", "1048576"))
                writer.write(head(200, [("Content-Length", n)]))
                block = b"x" * 65536
                while n:
                    k = min(n, len(block))
                    writer.write(block[:k])
                    await writer.drain()
                    n -= k
            elif path == "/crash":
                writer.write(head(200, [("Content-Length", 1000)]) + b"0123456789")
                await writer.drain()
                writer.transport.abort()
                return
            elif path == "/crash-chunked":
                writer.write(head(200, [("Transfer-Encoding", "chunked")]) + b"5\r\nhello\r\n")
                await writer.drain()
                writer.transport.abort()
                return
            elif path == "/slow-start":
                await asyncio.sleep(int(q.get("ms", "1000")) / 1000)
                writer.write(head(200, [("Content-Length", 2)]) + b"ok")
            elif path == "/close-after":
                writer.write(head(200, [("Content-Length", 2)]) + b"ok")
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.transport.abort()
                return
            else:
                body = json.dumps({
                    "method": method, "target": target, "version": version,
                    "headers": headers, "size": size[0], "sha256": h.hexdigest(),
                }).encode()
                writer.write(head(200, [("Content-Length", len(body)), ("Content-Type", "application/json")]) + body)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        STATS["aborted"] += 1
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main():
    port = int(sys.argv[1])
    server = await asyncio.start_server(handle, "127.0.0.1", port, limit=1 << 20)
    print("origin listening on", port, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass

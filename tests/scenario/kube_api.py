#!/usr/bin/python3
"""A Kubernetes API server test double: the part of the API the activator
watches, in Kubernetes' JSON wire shapes, over plain HTTP (the real API
server cannot run here).

  GET  <collection>?limit=N[&continue=T][&labelSelector=k=v]   a List, paginated
  GET  <collection>?watch=1&resourceVersion=RV[&labelSelector]  chunked stream of
       {"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{...}} lines;
       a version older than the compaction point gets ERROR 410 (Gone)
  collections: /apis/serving.knative.dev/v1/revisions, /api/v1/endpoints,
               /api/v1/services (cluster-wide, as the activator lists them),
               /apis/networking.internal.knative.dev/v1alpha1/ingresses (COLDBREW_INGRESS),
               /api/v1/secrets, /api/v1/configmaps, and every core collection namespaced
               as /api/v1/namespaces/NS/<plural> (system-internal-tls: the routing
               secret and the trust-bundle ConfigMaps of SYSTEM_NAMESPACE)

Test hooks (POST, JSON body):
  /_test/apply   {"kind": "...", "object": {...}}   create or update (new resourceVersion)
  /_test/delete  {"kind": "...", "namespace": "...", "name": "..."}
  /_test/drop    {}  cut every watch stream in the middle of an object
  /_test/garbage {}  send a line that is not JSON on every watch
  /_test/compact {}  forget history: watches from older versions get 410
  /_test/stats   GET: {"lists": n, "watches": n}
Usage: kube_api.py PORT [PAGE_SIZE] [--tls CERT KEY] [--token TOKEN]
  --tls     serve HTTPS with that certificate (the in-cluster path)
  --token   require "Authorization: Bearer TOKEN" on API calls (401 otherwise)
"""
import asyncio, json, sys, urllib.parse

KINDS = {"Revision": "/apis/serving.knative.dev/v1/revisions",
         "Endpoints": "/api/v1/endpoints", "Service": "/api/v1/services",
         "Ingress": "/apis/networking.internal.knative.dev/v1alpha1/ingresses",
         "Secret": "/api/v1/secrets", "ConfigMap": "/api/v1/configmaps"}
STATE = {"rv": 100, "compacted": 0, "objects": {}, "events": [], "watchers": set(),
         "lists": 0, "watches": 0}
ARGS = sys.argv[1:]
PAGE = int(ARGS[1]) if len(ARGS) > 1 and not ARGS[1].startswith("--") else 2
TLS = ARGS[ARGS.index("--tls") + 1:ARGS.index("--tls") + 3] if "--tls" in ARGS else None
TOKEN = ARGS[ARGS.index("--token") + 1] if "--token" in ARGS else None


def key(o):
    m = o["metadata"]
    return (m.get("namespace", ""), m["name"])


def matches(obj, selector, ns=None):
    if ns is not None and obj["metadata"].get("namespace", "") != ns:
        return False
    if not selector:
        return True
    labels = obj["metadata"].get("labels", {})
    for term in selector.split(","):
        k, v = term.split("=", 1)
        if labels.get(k) != v:
            return False
    return True


def publish(kind, typ, obj):
    STATE["rv"] += 1
    obj = json.loads(json.dumps(obj))
    obj["metadata"]["resourceVersion"] = str(STATE["rv"])
    ev = (STATE["rv"], kind, typ, obj)
    STATE["events"].append(ev)
    for w in list(STATE["watchers"]):
        w.put_nowait(ev)
    return obj


async def respond(writer, status, body, ctype="application/json"):
    data = json.dumps(body).encode() if not isinstance(body, bytes) else body
    writer.write(b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (status, ctype.encode(), len(data)) + data)
    await writer.drain()


async def handle(reader, writer):
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            lines = head.decode().split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            hdrs = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
            body = await reader.readexactly(int(hdrs.get("content-length", "0")))
            url = urllib.parse.urlsplit(target)
            q = dict(urllib.parse.parse_qsl(url.query))
            if url.path.startswith("/_test/"):
                await test_hook(writer, url.path[7:], json.loads(body or b"{}"))
                continue
            if TOKEN and hdrs.get("authorization") != "Bearer " + TOKEN:
                await respond(writer, 401, {"kind": "Status", "code": 401, "message": "Unauthorized"})
                continue
            path, ns = url.path, None
            parts = path.split("/")
            if len(parts) == 6 and parts[1:4] == ["api", "v1", "namespaces"]:
                path, ns = "/api/v1/" + parts[5], parts[4]  # a namespaced core collection
            kind = next((k for k, p in KINDS.items() if p == path), None)
            if not kind:
                await respond(writer, 404, {"kind": "Status", "code": 404, "message": "not found"})
                continue
            sel = q.get("labelSelector")
            if q.get("watch") in ("1", "true"):
                await watch(writer, kind, sel, int(q.get("resourceVersion") or 0), ns)
                return
            STATE["lists"] += 1
            items = sorted((o for (k, _), o in STATE["objects"].items() if k == kind and matches(o, sel, ns)),
                           key=lambda o: key(o))
            start = int(q.get("continue") or 0)
            limit = min(int(q.get("limit") or PAGE), PAGE)
            page = items[start:start + limit]
            meta = {"resourceVersion": str(STATE["rv"])}
            if start + limit < len(items):
                meta["continue"] = str(start + limit)
            await respond(writer, 200, {"kind": kind + "List", "apiVersion": "v1", "metadata": meta, "items": page})
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def watch(writer, kind, sel, since, ns=None):
    STATE["watches"] += 1
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")

    def chunk(d):
        writer.write(b"%x\r\n%s\r\n" % (len(d), d))
    if since and since < STATE["compacted"]:
        chunk(json.dumps({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                          "message": "too old resource version: %d (%d)" % (since, STATE["compacted"]),
                          "reason": "Expired", "code": 410}}).encode() + b"\n")
        chunk(b"")
        await writer.drain()
        return
    queue = asyncio.Queue()
    for ev in STATE["events"]:
        if ev[0] > since:
            queue.put_nowait(ev)
    STATE["watchers"].add(queue)
    try:
        while True:
            ev = await queue.get()
            if ev == "drop":
                line = json.dumps({"type": "ADDED", "object": {"metadata": {"name": "half"}}}).encode()
                chunk(line[:len(line) // 2])
                await writer.drain()
                writer.transport.abort()
                return
            if ev == "garbage":
                chunk(b"this is not json\n")
                await writer.drain()
                continue
            rv, k, typ, obj = ev
            if k != kind or not matches(obj, sel, ns):
                continue
            chunk(json.dumps({"type": typ, "object": obj}).encode() + b"\n")
            await writer.drain()
    finally:
        STATE["watchers"].discard(queue)


async def test_hook(writer, what, body):
    if what == "apply":
        kind, obj = body["kind"], body["object"]
        k = (kind, key(obj))
        typ = "MODIFIED" if k in STATE["objects"] else "ADDED"
        STATE["objects"][k] = publish(kind, typ, obj)
    elif what == "delete":
        k = (body["kind"], (body["namespace"], body["name"]))
        obj = STATE["objects"].pop(k, None)
        if obj:
            publish(body["kind"], "DELETED", obj)
    elif what in ("drop", "garbage"):
        for w in list(STATE["watchers"]):
            w.put_nowait(what)
    elif what == "compact":
        STATE["compacted"] = STATE["rv"] + 1
        STATE["events"] = []
    elif what == "stats":
        await respond(writer, 200, {"lists": STATE["lists"], "watches": STATE["watches"]})
        return
    await respond(writer, 200, {"ok": True, "rv": STATE["rv"]})


async def main():
    ctx = None
    if TLS:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(TLS[0], TLS[1])
    server = await asyncio.start_server(handle, "127.0.0.1", int(ARGS[0]), limit=1 << 20, ssl=ctx)
    async with server:
        await server.serve_forever()

if __name__ == "__main__":
    asyncio.run(main())

"""PUT latency of two running XCAP servers, measured interleaved request by request.

Usage: openxcap_latency.py BASE_URL_A BASE_URL_B [--puts 200] [--user sip:bench@example.com]

Each BASE_URL is an xcap-root (``http://127.0.0.1:8181/xcap-root``).  Typical use: A
is OpenXCAP with ``backend = Database``, B the same OpenXCAP with ``backend = XCAPDiff``
(``storage = Database``).  Both need to trust the client (``[Authentication]
trusted_peers``).  The script creates one resource-lists document on each server, then
alternates element PUTs (each adds a new entry) A, B, B, A, A, B, … over one keep-alive
connection per server, so machine noise hits both alike; it prints the medians, p90s and
the ratio B/A of the medians.  Then it runs ``--concurrent`` element PUTs of distinct
entries at once on each server and reports how many entries survived.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import threading
import time
from urllib.parse import quote, urlsplit

DOC = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">'
    b'<list name="bench"><entry uri="sip:first@example.com"/></list></resource-lists>'
)


def entry(user: str) -> bytes:
    name = f"<display-name>{user}</display-name>"
    return f'<entry uri="sip:{user}@example.com">{name}</entry>'.encode()


class Server:
    def __init__(self, root: str, user: str, doc: str) -> None:
        parts = urlsplit(root.rstrip("/"))
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = f"{parts.path}/resource-lists/users/{user}/{doc}"
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)

    def request(self, method: str, path: str, body: bytes | None, ctype: str) -> tuple[int, bytes]:
        headers = {"Content-Type": ctype} if body is not None else {}
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def entry_path(self, n: int) -> str:
        node = f'/resource-lists/list[@name="bench"]/entry[@uri="sip:e{n}@example.com"]'
        return self.path + "/~~" + quote(node, safe="/:@")

    def put_entry(self, n: int, conn: http.client.HTTPConnection | None = None) -> int:
        body = entry(f"e{n}")
        if conn is None:
            return self.request("PUT", self.entry_path(n), body, "application/xcap-el+xml")[0]
        conn.request("PUT", self.entry_path(n), body=body,
                     headers={"Content-Type": "application/xcap-el+xml"})  # fmt: skip
        resp = conn.getresponse()
        resp.read()
        return resp.status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--puts", type=int, default=200)
    ap.add_argument("--concurrent", type=int, default=20)
    ap.add_argument("--user", default="sip:bench@example.com")
    args = ap.parse_args()
    stamp = str(int(time.time()))
    servers = [Server(args.a, args.user, f"lat{stamp}"), Server(args.b, args.user, f"lat{stamp}")]
    for s in servers:
        status, _ = s.request("PUT", s.path, DOC, "application/resource-lists+xml")
        assert status in (200, 201), status
        for n in range(5):  # warm up: imports, caches, connections
            s.put_entry(100000 + n)
    times: list[list[float]] = [[], []]
    for n in range(args.puts):
        order = (0, 1) if n % 2 == 0 else (1, 0)  # neither server always goes first
        for i in order:
            s = servers[i]
            t0 = time.perf_counter()
            status = s.put_entry(n)
            times[i].append(time.perf_counter() - t0)
            assert status in (200, 201), (i, n, status)
    med = [statistics.median(t) * 1000 for t in times]
    p90 = [statistics.quantiles(t, n=10)[-1] * 1000 for t in times]
    print(f"element PUTs: {args.puts} per server, interleaved")
    print(f"  A {args.a}: median {med[0]:.2f} ms  p90 {p90[0]:.2f} ms")
    print(f"  B {args.b}: median {med[1]:.2f} ms  p90 {p90[1]:.2f} ms")
    print(f"  B/A median ratio: {med[1] / med[0]:.3f}")

    for label, s, root in (("A", servers[0], args.a), ("B", servers[1], args.b)):
        path = s.path + f"c{args.concurrent}"
        s.request("PUT", path, DOC, "application/resource-lists+xml")
        barrier = threading.Barrier(args.concurrent)
        codes: list[int] = []

        def one(n: int, s: Server = s, path: str = path, barrier: threading.Barrier = barrier,
                codes: list[int] = codes) -> None:  # fmt: skip
            conn = http.client.HTTPConnection(s.host, s.port, timeout=30)
            body = entry(f"c{n}")
            node = f'/resource-lists/list[@name="bench"]/entry[@uri="sip:c{n}@example.com"]'
            barrier.wait()
            conn.request("PUT", path + "/~~" + quote(node, safe="/:@"), body=body,
                         headers={"Content-Type": "application/xcap-el+xml"})  # fmt: skip
            resp = conn.getresponse()
            resp.read()
            codes.append(resp.status)
            conn.close()

        threads = [threading.Thread(target=one, args=(n,)) for n in range(args.concurrent)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        _, doc = s.request("GET", path, None, "")
        kept = doc.count(b"<entry ")
        print(
            f"{label} {root}: {args.concurrent} concurrent element PUTs answered "
            f"{sorted(set(codes))}, entries kept: {kept}"
        )


if __name__ == "__main__":
    main()

"""A misbehaving HTTP server on loopback, to measure how anisearch bounds time and memory against it.

    python benchmarks/fault_server.py trickle --port 9101

Behaviours: ``trickle`` (a 100 kB body, one byte every 0.5 s), ``slow-headers`` (a header line every
0.5 s, never ending), ``endless`` (a fast chunked body that never ends), ``huge`` (a 200 MB answer),
``bomb`` (1 GiB of zeros gzip-compressed into about 1 MB), ``hits`` (a trace.moe answer with 100 000
hits), ``redirect-metadata`` (302 to the cloud metadata address). Every request gets the same behaviour.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import zlib
from pathlib import Path

PAUSE = threading.Event()  # never set: a wait that is not time.sleep
HEAD = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{}\r\n"
SAMPLE = (
    Path(__file__).resolve().parent.parent.parent
    / "shared/upstream-samples/api-v1-search-tinted-good-2021.json"
)


def behave(kind: str, connection: socket.socket) -> None:  # noqa: C901 - one branch per behaviour
    if kind == "trickle":
        connection.sendall(HEAD.format("Content-Length: 100000\r\n").encode())
        while True:
            PAUSE.wait(0.5)
            connection.sendall(b" ")
    elif kind == "slow-headers":
        connection.sendall(b"HTTP/1.1 200 OK\r\n")
        while True:
            PAUSE.wait(0.5)
            connection.sendall(b"X-Slow: 1\r\n")
    elif kind == "endless":
        connection.sendall(HEAD.format("Transfer-Encoding: chunked\r\n").encode())
        chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
        while True:
            connection.sendall(chunk)
    elif kind == "huge":
        size = 200 * 1000 * 1000
        connection.sendall(HEAD.format(f"Content-Length: {size}\r\n").encode())
        for _ in range(size // 0x10000):
            connection.sendall(b" " * 0x10000)
    elif kind == "bomb":
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        zeros = bytes(1 << 20)
        first = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
        following = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
        body = first + following * 1023
        connection.sendall(HEAD.format(f"Content-Encoding: gzip\r\nContent-Length: {len(body)}\r\n").encode())
        connection.sendall(body)
    elif kind == "hits":
        answer = json.loads(SAMPLE.read_text())
        answer["result"] = answer["result"][:1] * 100_000
        body = json.dumps(answer).encode()
        connection.sendall(HEAD.format(f"Content-Length: {len(body)}\r\n").encode() + body)
    elif kind == "redirect-metadata":
        connection.sendall(
            b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\n"
            b"Content-Length: 0\r\n\r\n"
        )


def serve(kind: str, connection: socket.socket) -> None:
    with connection:
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                data = connection.recv(65536)
                if not data:
                    return
                head += data
            headers, _, body = head.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in headers.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            while len(body) < length:
                body += connection.recv(65536)
            behave(kind, connection)
        except OSError:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "kind", choices=["trickle", "slow-headers", "endless", "huge", "bomb", "hits", "redirect-metadata"]
    )
    parser.add_argument("--port", type=int, default=9101)
    args = parser.parse_args()
    listener = socket.create_server(("127.0.0.1", args.port))
    print(f"{args.kind} on http://127.0.0.1:{args.port}", flush=True)
    while True:
        connection, _ = listener.accept()
        threading.Thread(target=serve, args=(args.kind, connection), daemon=True).start()


if __name__ == "__main__":
    main()

"""A Python HTTP load generator, for when wrk cannot be installed.

One process, uvloop, N keep-alive connections each sending the next request as
soon as the previous answer is complete (closed loop), optionally paced like
`lua/form.lua`. Requests are pre-encoded; answers are parsed with httptools, so
the generator spends its time in C as far as Python allows. It is still one
core: the suite reports its CPU next to every figure and flags a run where it
was saturated, because then the figure is the generator's limit, not the
target's. Stops on SIGINT/SIGTERM or after --duration, and prints the same
`@@BENCH {...}` line as wrk's `done()`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import time
from pathlib import Path
from urllib.parse import urlsplit

import httptools


def _requests(url: str, bodies_file: Path) -> tuple[list[bytes], list[int], str, int]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    out, weights = [], []
    for line in bodies_file.read_text().splitlines():
        weight, _, body = line.partition("\t")
        data = body.encode()
        out.append(
            f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        weights.append(int(weight))
    return out, weights, host, port


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.done: asyncio.Future[int] | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._finish(-1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._finish(-1)

    def on_message_complete(self) -> None:
        self._finish(self.parser.get_status_code())

    def _finish(self, status: int) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(status)


class Stats:
    def __init__(self) -> None:
        self.latencies: list[int] = []
        self.errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
        self.bytes = 0


async def _client(host: str, port: int, reqs: list[bytes], weights: list[int], delay_ms: int,
                  timeout: float, stats: Stats, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    conn: _Conn | None = None
    while not stop.is_set():
        if conn is None or conn.lost:
            try:
                _, conn = await loop.create_connection(_Conn, host, port)
            except OSError:
                stats.errors["connect"] += 1
                await asyncio.sleep(0.01)
                continue
        if delay_ms:
            await asyncio.sleep(delay_ms * (0.5 + random.random()) / 1000)
        req = reqs[0] if len(reqs) == 1 else random.choices(reqs, weights)[0]
        conn.done = loop.create_future()
        start = time.perf_counter_ns()
        assert conn.transport is not None
        conn.transport.write(req)
        try:
            status = await asyncio.wait_for(conn.done, timeout)
        except TimeoutError:
            stats.errors["timeout"] += 1
            conn.transport.close()
            conn = None
            continue
        if status < 0:
            stats.errors["read"] += 1
            conn = None
            continue
        stats.latencies.append((time.perf_counter_ns() - start) // 1000)
        if status > 399:
            stats.errors["status"] += 1


def _pct(sorted_us: list[int], q: float) -> int:
    if not sorted_us:
        return 0
    return sorted_us[min(len(sorted_us) - 1, int(len(sorted_us) * q / 100))]


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    reqs, weights, host, port = _requests(args.url, Path(args.bodies))
    stats, stop = Stats(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(args.duration, stop.set)
    started = time.perf_counter()
    tasks = [asyncio.create_task(_client(host, port, reqs, weights, args.delay_ms,
                                         args.timeout, stats, stop))
             for _ in range(args.connections)]
    await stop.wait()
    elapsed = time.perf_counter() - started
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    lat = sorted(stats.latencies)
    return {"requests": len(lat), "duration_us": int(elapsed * 1e6), "bytes": stats.bytes,
            **stats.errors, "p50_us": _pct(lat, 50), "p90_us": _pct(lat, 90),
            "p99_us": _pct(lat, 99), "p999_us": _pct(lat, 99.9),
            "mean_us": sum(lat) / len(lat) if lat else 0.0, "max_us": lat[-1] if lat else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("bodies", help='file of "weight<TAB>body" lines')
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--delay-ms", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        result = asyncio.run(main_async(args))
    else:
        result = uvloop.run(main_async(args))
    print("@@BENCH " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

"""Client overhead: sample_many vs a bare aiohttp loop against the same loopback server.

The server runs in a separate process and answers every POST with one fixed chat body, so
what differs between rows is client-side work only. Each mode runs ``--runs`` times,
alternating; the table shows medians and the ratio to the bare loop.

    python benchmarks/pool_overhead.py [--n 5000] [--concurrency 32] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import time

import aiohttp
import orjson
from aiohttp import web

import llmvariance as lv

from _common import median, table, write_json

BODY = orjson.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
    "system_fingerprint": "fp_bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "word " * 100},
                 "finish_reason": "length"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 100, "total_tokens": 110},
})


def serve(sock: socket.socket) -> None:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=BODY, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    web.run_app(app, sock=sock, print=None, access_log=None)


async def bare(url: str, n: int, concurrency: int) -> float:
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    texts: list[str] = [""] * n
    indices = iter(range(n))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            for i in indices:
                async with session.post(url + "/chat/completions", data=body,
                                        headers={"Content-Type": "application/json"}) as r:
                    texts[i] = orjson.loads(await r.read())["choices"][0]["message"]["content"]

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start


async def library(url: str, n: int, concurrency: int) -> float:
    req = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    start = time.perf_counter()
    result = await lv.sample_many(req, n, endpoint=lv.Endpoint(base_url=url, api_key=None),
                                  concurrency=concurrency)
    elapsed = time.perf_counter() - start
    assert result.report.n_ok == n
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(sock,),
                                                          daemon=True)
    server.start()
    try:
        modes = {"bare aiohttp loop": bare, "llmvariance.sample_many": library}
        times: dict[str, list[float]] = {name: [] for name in modes}
        asyncio.run(bare(url, 200, args.concurrency))  # warm-up
        for _ in range(args.runs):
            for name, mode in modes.items():
                times[name].append(asyncio.run(mode(url, args.n, args.concurrency)))
    finally:
        server.terminate()
        server.join()

    base = median(times["bare aiohttp loop"])
    rows = []
    for name, runs in times.items():
        m = median(runs)
        rows.append([name, args.n / m, m, base / m])
    print(f"n={args.n} concurrency={args.concurrency} runs={args.runs} (medians)")
    print(table(["client", "requests/s", "seconds", "throughput vs bare"], rows))
    path = write_json("pool_overhead", {
        "n": args.n, "concurrency": args.concurrency, "runs": args.runs,
        "seconds": times,
        "median_requests_per_s": {name: args.n / median(r) for name, r in times.items()},
        "throughput_ratio_vs_bare": median(times["bare aiohttp loop"])
        / median(times["llmvariance.sample_many"]),
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

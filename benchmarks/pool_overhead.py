"""Client overhead: sample_many against a bare aiohttp loop and the clients people would use.

A loopback server in its own process answers every POST with one fixed chat body, so what
differs between rows is client-side work only. For each concurrency C, every client runs
``--runs`` times, interleaved: the bare aiohttp loop and ``sample_many`` on asyncio and on
uvloop, the official ``openai`` SDK's ``AsyncOpenAI`` and a bare ``httpx`` loop (both on
asyncio; ``pip install .[bench]``). With ``--candidates`` also ``sample_many`` over each
transport that was a candidate for the default (``AiohttpTransport`` and the adapters in
``candidates.py``; ``pip install .[candidates]``), on both loops. The table shows medians:
requests/s, client CPU ms per request (all threads of the process: a Rust client's
runtime threads count), the ratio of requests/s to the bare aiohttp loop on the same
event loop, and how many times less CPU per request than that loop this client spends
(the figure that survives a loaded machine, where the server bounds every fast client).

    python benchmarks/pool_overhead.py [--n 5000] [--concurrency 16,64,256] [--runs 3]
                                       [--candidates]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import time
from collections.abc import Awaitable, Callable

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
REQUEST = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def serve(sock: socket.socket) -> None:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=BODY, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    web.run_app(app, sock=sock, print=None, access_log=None)


async def bare(url: str, n: int, concurrency: int) -> None:
    body = orjson.dumps(REQUEST)
    texts: list[str] = [""] * n
    indices = iter(range(n))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            for i in indices:
                async with session.post(url + "/chat/completions", data=body,
                                        headers={"Content-Type": "application/json"}) as r:
                    texts[i] = orjson.loads(await r.read())["choices"][0]["message"]["content"]

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def library(url: str, n: int, concurrency: int) -> None:
    req = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    result = await lv.sample_many(req, n, endpoint=lv.Endpoint(base_url=url, api_key=None),
                                  concurrency=concurrency)
    assert result.report.n_ok == n


async def openai_sdk(url: str, n: int, concurrency: int) -> None:
    import httpx
    from openai import AsyncOpenAI

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    # no timeout: on a loaded machine a request may wait long for one of the connections
    client = AsyncOpenAI(base_url=url, api_key="none", max_retries=0,
                         http_client=httpx.AsyncClient(limits=limits, timeout=None))  # noqa: S113
    texts: list[str | None] = [None] * n
    indices = iter(range(n))

    async def worker() -> None:
        for i in indices:
            answer = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}])
            texts[i] = answer.choices[0].message.content

    async with client:
        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def httpx_loop(url: str, n: int, concurrency: int) -> None:
    import httpx

    body = orjson.dumps(REQUEST)
    texts: list[str] = [""] * n
    indices = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=None) as client:  # noqa: S113
        async def worker() -> None:
            for i in indices:
                r = await client.post(url + "/chat/completions", content=body,
                                      headers={"Content-Type": "application/json"})
                texts[i] = orjson.loads(r.content)["choices"][0]["message"]["content"]

        await asyncio.gather(*(worker() for _ in range(concurrency)))


Client = Callable[[str, int, int], Awaitable[None]]


def over(kind: type[lv.Transport]) -> Client:
    """``sample_many`` over a transport of this kind instead of the default."""
    async def client(url: str, n: int, concurrency: int) -> None:
        req = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
        endpoint = lv.Endpoint(base_url=url, api_key=None)
        transport = kind(max_connections=concurrency,  # type: ignore[call-arg]
                         headers=endpoint.request_headers())
        try:
            result = await lv.sample_many(req, n, endpoint=endpoint, concurrency=concurrency,
                                          transport=transport)
        finally:
            await transport.aclose()
        assert result.report.n_ok == n, result.report.failure_messages

    client.__name__ = f"over_{kind.__name__}"
    return client


def candidate_clients() -> dict[str, tuple[Client, bool]]:
    from candidates import CANDIDATES

    kinds: dict[str, type[lv.Transport]] = {"AiohttpTransport": lv.AiohttpTransport,
                                            **CANDIDATES}
    clients: dict[str, tuple[Client, bool]] = {}
    for name, kind in kinds.items():
        for uvloop in (False, True):
            loop = "uvloop" if uvloop else "asyncio"
            clients[f"sample_many over {name} ({loop})"] = (over(kind), uvloop)
    return clients


def timed(client: Client, url: str, n: int, concurrency: int, uvloop: bool
          ) -> tuple[float, float]:
    """Wall seconds and client CPU seconds of one run on a fresh event loop."""
    import uvloop as uv

    wall, cpu = time.perf_counter(), time.process_time()
    runner = uv.run if uvloop else asyncio.run
    runner(client(url, n, concurrency))
    return time.perf_counter() - wall, time.process_time() - cpu


CLIENTS: dict[str, tuple[Client, bool]] = {
    "bare aiohttp (asyncio)": (bare, False),
    "sample_many (asyncio)": (library, False),
    "bare aiohttp (uvloop)": (bare, True),
    "sample_many (uvloop)": (library, True),
    "openai AsyncOpenAI (asyncio)": (openai_sdk, False),
    "httpx loop (asyncio)": (httpx_loop, False),
}
BASELINE = {False: "bare aiohttp (asyncio)", True: "bare aiohttp (uvloop)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--n-slow", type=int, default=1000,
                        help="requests per run for the openai SDK and httpx (slower)")
    parser.add_argument("--concurrency", default="16,64,256")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--candidates", action="store_true",
                        help="add sample_many over each candidate transport")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    clients = dict(CLIENTS)
    if args.candidates:
        clients.update(candidate_clients())

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(sock,),
                                                          daemon=True)
    server.start()
    results: dict[int, dict[str, dict[str, list[float]]]] = {}
    try:
        asyncio.run(bare(url, 200, 16))  # warm-up
        for concurrency in levels:
            runs = results[concurrency] = {name: {"wall": [], "cpu": [], "n": []}
                                           for name in clients}
            for _ in range(args.runs):
                for name, (client, uvloop) in clients.items():
                    n = args.n_slow if client in (openai_sdk, httpx_loop) else args.n
                    wall, cpu = timed(client, url, n, concurrency, uvloop)
                    runs[name]["wall"].append(wall)
                    runs[name]["cpu"].append(cpu)
                    runs[name]["n"].append(n)
    finally:
        server.terminate()
        server.join()

    rows = []
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for concurrency, runs in results.items():
        rate = {name: median([n / w for n, w in zip(r["n"], r["wall"], strict=True)])
                for name, r in runs.items()}
        cpu = {name: median([c / n * 1000 for n, c in zip(r["n"], r["cpu"], strict=True)])
               for name, r in runs.items()}
        summary[str(concurrency)] = {}
        for name, (_, uvloop) in clients.items():
            ratio = rate[name] / rate[BASELINE[uvloop]]
            # on a shared machine the one-process server bounds requests/s for every fast
            # client alike; the client's own CPU per request is what tells them apart
            cheaper = cpu[BASELINE[uvloop]] / cpu[name]
            rows.append([concurrency, name, rate[name], cpu[name], ratio, cheaper,
                         rate[name] / rate[BASELINE[False]]])
            summary[str(concurrency)][name] = {"requests_per_s": rate[name],
                                               "cpu_ms_per_request": cpu[name],
                                               "ratio_vs_bare_same_loop": ratio,
                                               "cpu_ratio_bare_over_this": cheaper}
    print(f"n={args.n} (openai SDK, httpx: {args.n_slow}) runs={args.runs}, medians; "
          "server in its own process")
    print(table(["C", "client", "requests/s", "CPU ms/request", "vs bare (same loop)",
                 "CPU: bare / this", "vs bare asyncio"], rows))
    if args.candidates:
        print(candidates_summary(summary))
    path = write_json("pool_overhead_candidates" if args.candidates else "pool_overhead", {
        "n": args.n, "n_slow": args.n_slow, "runs": args.runs, "concurrency": levels,
        "results": summary, "raw": {str(c): r for c, r in results.items()},
    })
    print(f"wrote {path}")


def candidates_summary(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    """Per candidate: its client CPU per request relative to the default's, per C and loop
    (1.00 = as cheap as Http1Transport; the default must be cheapest, or a library within
    ~15 % of it would replace it)."""
    rows = []
    for level, by_name in summary.items():
        for loop in ("asyncio", "uvloop"):
            default = by_name[f"sample_many ({loop})"]["cpu_ms_per_request"]
            for name, figures in by_name.items():
                if name.startswith("sample_many over") and name.endswith(f"({loop})"):
                    candidate = name.removeprefix("sample_many over ").rsplit(" (", 1)[0]
                    rows.append([level, loop, candidate, figures["cpu_ms_per_request"],
                                 figures["cpu_ms_per_request"] / default])
    return table(["C", "loop", "transport under sample_many", "CPU ms/request",
                  "CPU vs Http1Transport"], rows)


if __name__ == "__main__":
    main()

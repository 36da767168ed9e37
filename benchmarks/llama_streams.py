"""Streamed and plain requests against llama.cpp's llama-server cost the same attempts.

llama-server closes the socket after every streamed answer while saying ``Keep-Alive``, so
the next request on that kept-alive connection fails before any byte of an answer. Such a
request is resent at once on a new connection without costing an attempt (pool stats
count it under ``resends``). This runs ``--n`` requests one at a time, plain then streamed,
on each shipped transport, ``--runs`` times interleaved, and prints the medians: seconds,
attempts per sample, free resends. Needs ``python3 dev.py engines`` once.

    python benchmarks/llama_streams.py [--n 40] [--runs 3] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import llmvariance as lv
from llmvariance.engines import LlamaCppServer
from llmvariance.engines._setup import model_path

from _common import median, table, write_json

TRANSPORTS: dict[str, type[lv.Transport]] = {"Http1Transport": lv.Http1Transport,
                                             "AiohttpTransport": lv.AiohttpTransport}


async def one(url: str, kind: type[lv.Transport], stream: bool, n: int, max_tokens: int
              ) -> dict[str, float]:
    request = lv.ChatRequest(model="smollm2", max_tokens=max_tokens, stream=stream,
                             messages=[{"role": "user", "content": "Tell me a story."}])
    endpoint = lv.Endpoint(base_url=url)
    transport = kind(max_connections=1, headers=endpoint.request_headers())  # type: ignore[call-arg]
    start = time.perf_counter()
    async with lv.ClientPool(endpoint, concurrency=1, transport=transport,
                             retry=lv.RetryPolicy(max_attempts=1)) as pool:
        result = await lv.sample_many(request, n, pool=pool)
        stats = pool.stats
    await transport.aclose()
    return {"seconds": time.perf_counter() - start, "ok": result.report.n_ok,
            "max_attempts": max(s.attempts for s in result.samples),
            "attempts": stats.attempts, "resends": stats.resends}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    raw: dict[str, list[dict[str, float]]] = {}
    async with LlamaCppServer(model_path("smollm2-135m-instruct-q4_1"), parallel=1,
                              ctx_size=2048) as url:
        for _ in range(args.runs):
            for name, kind in TRANSPORTS.items():
                for stream in (False, True):
                    key = f"{name} {'streamed' if stream else 'plain'}"
                    raw.setdefault(key, []).append(
                        await one(url, kind, stream, args.n, args.max_tokens))
    rows, summary = [], {}
    for key, runs in raw.items():
        figures = {field: median([r[field] for r in runs]) for field in runs[0]}
        summary[key] = figures
        rows.append([key, figures["seconds"], int(figures["ok"]),
                     int(figures["max_attempts"]), int(figures["attempts"]),
                     int(figures["resends"])])
    print(f"n={args.n} sequential requests, max_tokens={args.max_tokens}, "
          f"runs={args.runs} (medians), max_attempts=1")
    print(table(["transport, requests", "seconds", "ok", "max Sample.attempts",
                 "attempts", "free resends"], rows))
    path = write_json("llama_streams", {"n": args.n, "runs": args.runs,
                                        "max_tokens": args.max_tokens, "results": summary,
                                        "raw": raw})
    print(f"wrote {path}")


if __name__ == "__main__":
    asyncio.run(main())

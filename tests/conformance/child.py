"""One run of ``sample_many`` in a fresh process, for the cases a test process cannot judge.

Its peak memory (VmHWM) is this run's alone, its environment (``SSL_CERT_FILE``,
``HTTPS_PROXY``, ``NO_PROXY``) is read at import as every client reads it, and the sockets
left after the pool closed are counted in ``/proc/self/fd``. Reads one JSON object of
settings from argv[1]; prints one JSON object of outcomes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from dummyserver import transport_kinds

import llmvariance as lv


def sockets() -> int:
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            continue
    return count


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main(settings: dict[str, object]) -> dict[str, object]:
    kind = transport_kinds()[str(settings["kind"])]
    concurrency = int(settings.get("concurrency", 1))  # type: ignore[call-overload]
    timeouts = lv.Timeouts(**settings.get("timeouts", {}))  # type: ignore[arg-type]
    prompt = "x" * int(settings.get("prompt_bytes", 2))  # type: ignore[call-overload]
    request = lv.ChatRequest(model="m", messages=[{"role": "user", "content": prompt}],
                             stream=bool(settings.get("stream", False)))
    endpoint = lv.Endpoint(base_url=str(settings["url"]))
    transport = kind(max_connections=concurrency, timeouts=timeouts,  # type: ignore[call-arg]
                     headers=endpoint.request_headers(),
                     max_response_bytes=int(settings.get(  # type: ignore[call-overload]
                         "max_response_bytes", 1 << 20)))
    before = sockets()
    start = time.monotonic()
    pool = lv.ClientPool(endpoint, concurrency=concurrency, transport=transport,
                         retry=lv.RetryPolicy(max_attempts=int(  # type: ignore[call-overload]
                             settings.get("max_attempts", 1)), initial_backoff_s=0.01))
    async with pool:
        result = await lv.sample_many(request, int(settings.get("n", 1)),  # type: ignore[call-overload]
                                      pool=pool)
    await transport.aclose()
    elapsed = time.monotonic() - start
    for _ in range(3):  # an aborted socket closes on the next turn of the loop
        await asyncio.sleep(0)
    return {
        "texts": [s.text for s in result.samples],
        "errors": [None if s.error is None else [s.error.kind, s.error.message]
                   for s in result.samples],
        "attempts": [s.attempts for s in result.samples],
        "resends": getattr(pool.stats, "resends", 0),  # (absent before issue 19)
        "elapsed_s": elapsed,
        "peak_rss_mb": peak_rss_mb(),
        "sockets_left": sockets() - before,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))

"""Rate-limit accuracy: configured vs achieved rates against a server enforcing limits.

For each setting, a SimServer enforces a limit over 1 s sliding windows (as providers
enforce per-minute limits over short windows) and the client runs N identical requests
at concurrency 16. The achieved rate is measured at the server, from the first to the
last accepted request. Rows with "server only" run with no client limit to show what the
server's 429s and the client's pauses cost. Medians of ``--runs`` runs.

    python benchmarks/ratelimit_accuracy.py [--runs 3] [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass

import llmvariance as lv
from llmvariance.testing import Faults, SimServer

from _common import median, table, write_json

MAX_TOKENS = 20
# Blocking end-of-text makes every completion exactly MAX_TOKENS long, so the client's
# usage-corrected token count and the server's (prompt + max_tokens) agree.
REQ = lv.ChatRequest(model="dense", messages=[{"role": "user", "content": "Count the sheep"}],
                     max_tokens=MAX_TOKENS, logit_bias={"100257": -100})
SERVER_COST = 6 + MAX_TOKENS  # "user: Count the sheep" is 6 simulator tokens


@dataclass
class Setting:
    name: str
    server_rpm: float | None
    server_tpm: float | None
    client: lv.RateLimit | None

    @property
    def configured(self) -> tuple[str, float]:
        if self.client is None:
            limit = self.server_rpm or self.server_tpm
            assert limit is not None
            return ("rpm" if self.server_rpm else "tpm", float(limit))
        if self.client.requests_per_minute is not None:
            return "rpm", self.client.requests_per_minute
        assert self.client.tokens_per_minute is not None
        return "tpm", self.client.tokens_per_minute


SETTINGS = [
    Setting("rpm 300", 300, None, lv.RateLimit(requests_per_minute=300)),
    Setting("rpm 600", 600, None, lv.RateLimit(requests_per_minute=600)),
    Setting("rpm 540 (server 600)", 600, None, lv.RateLimit(requests_per_minute=540)),
    Setting("rpm 1200", 1200, None, lv.RateLimit(requests_per_minute=1200)),
    Setting("rpm 3000", 3000, None, lv.RateLimit(requests_per_minute=3000)),
    Setting("tpm 12000", None, 12000, lv.RateLimit(tokens_per_minute=12000)),
    Setting("tpm 60000", None, 60000, lv.RateLimit(tokens_per_minute=60000)),
    Setting("server only, rpm 600", 600, None, None),
    Setting("server only, tpm 12000", None, 12000, None),
]


async def run_once(setting: Setting, seconds: float) -> dict[str, float]:
    kind, per_minute = setting.configured
    per_second = per_minute / 60.0 / (SERVER_COST if kind == "tpm" else 1)
    n = max(10, round(per_second * seconds) + 1)
    server = SimServer(faults=Faults(requests_per_minute=setting.server_rpm,
                                     tokens_per_minute=setting.server_tpm, window_s=1.0))
    async with server as url, lv.ClientPool(lv.Endpoint(base_url=url), concurrency=16,
                                            rate_limit=setting.client) as pool:
        start = time.monotonic()
        result = await lv.sample_many(REQ, n, pool=pool)
        wall = time.monotonic() - start
        stats = pool.stats
    assert result.report.n_ok == n, result.report
    times = server.stats.accepted_at
    span = times[-1] - times[0]
    achieved_rpm = (len(times) - 1) / span * 60.0
    achieved = achieved_rpm * (SERVER_COST if kind == "tpm" else 1)
    return {"n": n, "achieved": achieved, "ratio": achieved / per_minute,
            "429s": server.stats.rate_limited, "paused_s": stats.paused_s, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="target length of a run")
    args = parser.parse_args()

    rows, records = [], []
    for setting in SETTINGS:
        runs = [asyncio.run(run_once(setting, args.seconds)) for _ in range(args.runs)]
        kind, configured = setting.configured
        m = {key: median([r[key] for r in runs]) for key in runs[0]}
        rows.append([setting.name, kind, configured, m["achieved"], m["ratio"],
                     int(m["429s"]), m["paused_s"], int(m["n"])])
        records.append({"setting": setting.name, "unit": f"per minute ({kind})",
                        "configured": configured, "median": m, "runs": runs})
    print(f"medians of {args.runs} runs; achieved rate measured at the server")
    print(table(["setting", "unit", "configured", "achieved", "achieved/configured",
                 "429s", "paused s", "n"], rows))
    path = write_json("ratelimit_accuracy", {"runs": args.runs, "settings": records})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

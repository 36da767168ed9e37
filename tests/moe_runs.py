"""Run files of the simulator's ``moe`` model under load: the data the reports are about."""

from __future__ import annotations

from pathlib import Path

import anyio

import llmvariance as lv
from llmvariance._runs.runfile import RunFile
from llmvariance.testing import SimServer

PROMPT = ("Write a unique, surprising, extremely randomized story with highly unpredictable "
          "changes of events.")
REQUEST = lv.ChatRequest(model="moe", messages=[{"role": "user", "content": PROMPT}],
                         max_tokens=32, logprobs=True, top_logprobs=3,
                         logit_bias={"100257": -100})


async def _moe_run(path: Path, n: int) -> lv.SampleSet:
    async with SimServer(step_time_s=0.002) as base_url:
        endpoint = lv.Endpoint(base_url=base_url, api_key=None)
        # other users' requests keep the server busy, so batches mix prompts
        async with (lv.ClientPool(endpoint, concurrency=n + 8) as pool,
                    lv.background_load(pool, REQUEST, 8)):
            return await lv.sample_many(REQUEST, n, pool=pool, concurrency=n, output=path)


def moe_run(path: Path, n: int = 60) -> lv.SampleSet:
    """Write ``n`` samples of ``moe`` sent all at once under background load to ``path``."""
    result: lv.SampleSet = anyio.run(_moe_run, path, n)
    return result


def split_run(source: Path, first: Path, second: Path, at: int) -> None:
    """Write the samples of ``source`` below index ``at`` to ``first``, the rest to ``second``."""
    contents = lv.read_run(source)
    n = contents.max_n
    endpoint = lv.Endpoint(base_url=contents.endpoint_url or "http://127.0.0.1:1/v1")
    files = {}
    for path in (first, second):
        files[path], _ = RunFile.open(path, contents.request, n, endpoint, lv.__version__)
    try:
        for sample in contents.iter_samples():
            files[first if sample.index < at else second].write(sample)
    finally:
        for run_file in files.values():
            run_file.close()

"""DataFrames (to_pandas): one typed row per sample, and the run file read by pandas and
polars as the README says."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import llmvariance as lv
from llmvariance.testing import SimServer

pd = pytest.importorskip("pandas", reason="the pandas extra is not installed")

pytestmark = pytest.mark.anyio

S = lv.Sample
REQ = lv.ChatRequest(model="dense", messages=[{"role": "user", "content": "hi"}],
                     max_tokens=6, logprobs=True)


def sample_set() -> lv.SampleSet:
    samples = [
        S(index=0, text="ab", tokens=["a", "b"], token_logprobs=[-0.1, -0.2],
          finish_reason="length", system_fingerprint="fp", model="m", latency_s=0.5,
          ttft_s=0.1, usage=lv.Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5),
          condition="burst", block=2),
        S(index=1, attempts=3, latency_s=0.2, error=lv.SampleError(
            kind="http_status", status=503, message="HTTP 503: busy")),
    ]
    return lv.SampleSet(request=REQ, endpoint="e", samples=samples,
                        report=lv.analyze(samples))


def test_one_typed_row_per_sample() -> None:
    frame = sample_set().to_pandas()
    assert list(frame["index"]) == [0, 1]
    assert {name: str(dtype) for name, dtype in frame.dtypes.items()} == {
        "index": "int64", "ok": "bool", "text": "string", "n_tokens": "Int64",
        "finish_reason": "string", "system_fingerprint": "string", "model": "string",
        "endpoint": "string", "condition": "string", "block": "Int64", "latency_s": "float64",
        "ttft_s": "float64", "itl_mean_s": "float64", "itl_max_s": "float64",
        "attempts": "int64", "prompt_tokens": "Int64", "completion_tokens": "Int64",
        "total_tokens": "Int64", "cache_read_tokens": "Int64", "cache_write_tokens": "Int64",
        "response_id": "string", "error_kind": "string", "error_status": "Int64",
        "error_message": "string"}
    ok, failed = frame.iloc[0], frame.iloc[1]
    assert (ok["ok"], ok["text"], ok["n_tokens"], ok["total_tokens"], ok["ttft_s"]) == (
        True, "ab", 2, 5, 0.1)
    assert ok["error_kind"] is pd.NA and ok["condition"] == "burst" and ok["block"] == 2
    assert (failed["ok"], failed["error_status"], failed["error_message"]) == (
        False, 503, "HTTP 503: busy")
    assert failed["text"] is pd.NA and failed["n_tokens"] is pd.NA
    assert pd.isna(failed["ttft_s"]) and failed["attempts"] == 3
    assert frame["text"].value_counts().to_dict() == {"ab": 1}


def test_tokens_on_request() -> None:
    frame = sample_set().to_pandas(tokens=True)
    assert frame["tokens"].tolist() == [["a", "b"], None]
    assert frame["token_logprobs"].tolist() == [[-0.1, -0.2], None]


async def test_a_run_file_reads_into_the_same_frame(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    async with SimServer() as base_url:
        result = await lv.sample_many(REQ, 12, endpoint=lv.Endpoint(base_url=base_url),
                                      concurrency=4, output=path)
    from_file = lv.read_run(path).to_pandas()
    pd.testing.assert_frame_equal(from_file, result.to_pandas())
    assert len(from_file) == 12 and from_file["ok"].all()

    # what the README says about reading run files without llmvariance
    raw = pd.read_json(path, lines=True)
    samples = raw[raw["record"] == "sample"].drop_duplicates("index", keep="last")
    assert sorted(samples["index"].astype(int)) == list(range(12))
    assert set(samples["text"]) == set(result.texts)
    pl = pytest.importorskip("polars", reason="polars is not installed")
    frame = (pl.read_ndjson(path).filter(pl.col("record") == "sample")
             .unique("index", keep="last", maintain_order=True))
    assert sorted(frame["index"].to_list()) == list(range(12))
    assert set(frame["text"].to_list()) == set(result.texts)


def test_without_pandas_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"DataFrames need pandas: pip install pandas"):
        sample_set().to_pandas()

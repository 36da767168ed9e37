"""``lv.compare_runs`` / ``llmvariance compare``: did it change between two runs of one
request, or of one suite?"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import llmvariance as lv
from llmvariance._runs.runfile import RunFile
from llmvariance.testing import DenseModel, SimServer

pytestmark = pytest.mark.anyio

CLI = [sys.executable, "-m", "llmvariance"]
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PROMPT = "Tell me story number 1"
"""A prompt on which the simulator's moe model, batched, never gives dense's output."""
EP = lv.Endpoint(base_url="http://127.0.0.1:9/v1", api_key=None)


def story(model: str, **extra: object) -> lv.ChatRequest:
    return lv.ChatRequest(model=model, messages=[{"role": "user", "content": PROMPT}],
                          max_tokens=32, logprobs=True, **extra)  # type: ignore[arg-type]


async def burst(url: str, request: lv.ChatRequest, path: Path, n: int = 30) -> None:
    await lv.sample_many(request, n, endpoint=lv.Endpoint(base_url=url), concurrency=n,
                         output=path)


async def test_two_runs_of_dense_compare_as_no_change(tmp_path: Path) -> None:
    async with SimServer(step_time_s=0.002) as url:
        await burst(url, story("dense"), tmp_path / "a.jsonl")
        await burst(url, story("dense", stream=True), tmp_path / "b.jsonl")  # streamed: same
    c = lv.compare_runs(tmp_path / "a.jsonl", tmp_path / "b.jsonl")
    assert isinstance(c, lv.RunComparison)
    assert not c.changed and not c.mode.changed
    assert c.verdict.startswith("no change detected at alpha = 0.05: the most common output "
                                "is the same (30 times in a, 30 in b)")
    assert c.more_variable.pvalue == c.less_variable.pvalue == 1.0
    assert c.distributions_differ.pvalue == 1.0
    assert c.a.models == c.b.models == {"dense": 30}
    assert c.a.fingerprints == {"fp_sim_dense": 30} and c.a.server is None
    assert c.logprobs is not None and c.logprobs.identical_within_outputs is True
    assert "the logprobs are bitwise identical (60 samples" in c.to_text()


async def test_dense_against_moe_is_a_changed_mode_and_more_variance_in_b(
        tmp_path: Path) -> None:
    async with SimServer(step_time_s=0.002) as url:
        await burst(url, story("dense"), tmp_path / "dense.jsonl")
        await burst(url, story("moe"), tmp_path / "moe.jsonl")
    with pytest.raises(lv.ConfigError, match=r"b: the runs are of different requests: model: "
                                             r"'dense' in a, 'moe' in b; compare them anyway "
                                             r"with allow_different=True"):
        lv.compare_runs(tmp_path / "dense.jsonl", tmp_path / "moe.jsonl")
    c = lv.compare_runs(tmp_path / "dense.jsonl", tmp_path / "moe.jsonl", allow_different=True)
    assert isinstance(c, lv.RunComparison)
    assert c.changed and c.mode.changed and c.mode.a_in_b == 0
    assert c.mode.first_token is not None and c.mode.tokenization == "provider"
    assert c.mode.token_a != c.mode.token_b and c.mode.token_a.startswith(" ")  # tokens
    assert c.mode.mode_a.startswith(c.mode.mode_b[:c.mode.first_char])
    assert c.more_variable.pvalue < 0.01 and c.less_variable.pvalue > 0.5
    assert c.distributions_differ.pvalue < 0.01
    assert c.comparison.b.disagreement_rate > 0.3 and c.comparison.a.disagreement_rate == 0
    assert c.verdict.startswith("changed: the most common output changed at token "
                                f"{c.mode.first_token}")
    assert "b varies more than a: D 0." in c.verdict and "p < 0.001" in c.verdict
    assert c.request_differences == ["model: 'dense' in a, 'moe' in b"]
    assert c.b.models == {"moe": 30} and c.b.fingerprints == {"fp_sim_moe": 30}


async def test_a_silent_redeploy_changes_the_mode_not_the_variability(tmp_path: Path) -> None:
    async with SimServer() as url:
        await burst(url, story("dense"), tmp_path / "before.jsonl", 12)
    async with SimServer(models=[DenseModel(variant=1)]) as url:
        await burst(url, story("dense"), tmp_path / "after.jsonl", 12)
    c = lv.compare_runs(tmp_path / "before.jsonl", tmp_path / "after.jsonl")
    assert isinstance(c, lv.RunComparison)
    assert c.changed and c.mode.changed and c.mode.count_a == c.mode.count_b == 12
    assert "variability unchanged: D 0.000 vs 0.000" in c.verdict
    assert c.distributions_differ.pvalue < 0.001


def write_run(path: Path, request: lv.Request, samples: list[lv.Sample],
              server: dict[str, object] | None = None) -> None:
    run_file, _ = RunFile.open(path, request, len(samples), EP, lv.__version__)
    for sample in samples:
        run_file.write(sample)
    run_file.close()
    if server is not None:  # as a header that recorded the server's configuration
        lines = path.read_bytes().split(b"\n")
        header = orjson.loads(lines[0])
        header["server"] = server
        path.write_bytes(b"\n".join([orjson.dumps(header), *lines[1:]]))


def test_same_texts_with_changed_logprobs_and_server_differences(tmp_path: Path) -> None:
    request = story("m")

    def samples(shift: float) -> list[lv.Sample]:
        return [lv.Sample(index=i, text="a b", tokens=["a", " b"],
                          token_logprobs=[-0.5, -0.25 + shift]) for i in range(6)]

    write_run(tmp_path / "a.jsonl", request, samples(0.0),
              {"engine": "llama.cpp", "build": "b100", "total_slots": 8, "fetched_at": "x",
               "props": {"n_ctx": 4096}})
    write_run(tmp_path / "b.jsonl", request, samples(0.125),
              {"engine": "llama.cpp", "build": "b200", "total_slots": 8, "fetched_at": "y",
               "props": {"n_ctx": 8192}})
    c = lv.compare_runs(tmp_path / "a.jsonl", tmp_path / "b.jsonl")
    assert isinstance(c, lv.RunComparison) and not c.changed
    text = c.to_text()
    assert ("the texts agree across the runs but their logprobs changed from token 1 (max "
            "|Δ| 1.2e-01): the same words, computed differently") in text
    assert c.server_differences == ["build: 'b100' → 'b200'", "props.n_ctx: 4096 → 8192"]
    assert "llama.cpp build=b100 total_slots=8" in text


async def test_a_suite_alone_against_the_same_suite_under_load_finds_the_varying_prompts(
        tmp_path: Path) -> None:
    suite = lv.read_suite(EXAMPLES / "suite.jsonl")[:12]
    async with SimServer(step_time_s=0.001) as url:
        endpoint = lv.Endpoint(base_url=url)
        alone = await lv.sample_suite(suite, 6, endpoint=endpoint, concurrency=1,
                                      output=tmp_path / "alone.jsonl")
        async with (lv.ClientPool(endpoint, concurrency=40) as pool,
                    lv.background_load(pool, suite[0].request, 16)):
            loaded = await lv.sample_suite(suite, 6, pool=pool, concurrency=24,
                                           output=tmp_path / "loaded.jsonl")
    assert alone.report.varying == []
    c = lv.compare_runs(tmp_path / "alone.jsonl", tmp_path / "loaded.jsonl")
    assert isinstance(c, lv.SuiteRunComparison)
    assert sorted(c.varies_only_in_b) == sorted(loaded.report.varying)
    assert c.varies_only_in_b and c.varies_only_in_a == []
    assert c.changed and c.suite.cmh.pvalue < 0.05
    assert c.a.prompts == c.b.prompts == 12 and c.b.models == {"moe": 72}
    assert f"{len(c.varies_only_in_b)} vary in b only, 0 in a only" in c.verdict
    # the same files the other way round: nothing varies more in b
    back = lv.compare_runs(tmp_path / "loaded.jsonl", tmp_path / "alone.jsonl")
    assert isinstance(back, lv.SuiteRunComparison)
    assert back.varies_only_in_a == c.varies_only_in_b and back.suite.cmh.pvalue > 0.05


def echo_suite(answers: dict[str, list[str]], path: Path,
               requests: dict[str, lv.Request] | None = None) -> None:
    calls = {rid: iter(texts) for rid, texts in answers.items()}

    def handler(request: lv.HTTPRequest) -> lv.HTTPResponse:
        prompt = orjson.loads(request.body or b"")["messages"][-1]["content"]
        return lv.HTTPResponse(200, orjson.dumps({"choices": [{
            "message": {"content": next(calls[prompt])}, "finish_reason": "stop"}]}))

    suite = requests or {rid: lv.ChatRequest(model="m", messages=[{"role": "user",
                                                                  "content": rid}])
                         for rid in answers}
    n = len(next(iter(answers.values())))
    lv.sample_suite_sync(suite, n, endpoint=EP, transport=lv.MockTransport(handler),
                         concurrency=1, output=path)


def test_two_suite_runs_compare_their_accuracy_paired_by_prompt(tmp_path: Path) -> None:
    ids = [f"q{i}" for i in range(20)]
    echo_suite({rid: ["42", "42", "42"] for rid in ids}, tmp_path / "a.jsonl")
    worse = {rid: (["42", "41", "40"] if i < 12 else ["42", "42", "42"])
             for i, rid in enumerate(ids)}
    echo_suite(worse, tmp_path / "b.jsonl")
    expected = {rid: "42" for rid in ids}
    c = lv.compare_runs(tmp_path / "a.jsonl", tmp_path / "b.jsonl", answer=r"\d+",
                        expected=expected)
    assert isinstance(c, lv.SuiteRunComparison) and c.accuracy is not None
    acc = c.accuracy
    assert acc.accuracy_a == 1.0 and acc.accuracy_b == pytest.approx(1 - 12 * 2 / 60)
    assert acc.significant and acc.pvalue < 0.001 and c.changed
    assert [(r.only_a, r.only_b) for r in acc.mcnemar] == [(0, 0), (12, 0), (12, 0)]
    assert acc.mcnemar[0].pvalue == 1.0 and acc.mcnemar[1].adjusted_pvalue < 0.01
    assert "McNemar per rerun significant in 2 of 3 reruns" in acc.verdict
    again = lv.compare_accuracy(tmp_path / "a.jsonl", tmp_path / "b.jsonl", answer=r"\d+",
                                expected=expected)
    assert again == acc


def test_different_suites_are_refused_naming_the_first_difference(tmp_path: Path) -> None:
    answers = {"q1": ["a", "a"], "q2": ["b", "b"]}
    echo_suite(answers, tmp_path / "a.jsonl")
    other = {"q1": lv.ChatRequest(model="m", messages=[{"role": "user", "content": "q1"}]),
             "q2": lv.ChatRequest(model="m", messages=[{"role": "user", "content": "q2"}],
                                  max_tokens=5)}
    echo_suite(answers, tmp_path / "b.jsonl", other)
    with pytest.raises(lv.ConfigError, match=r"different suites: prompt 'q2': max_tokens: "
                                             r"null in a, 5 in b"):
        lv.compare_runs(tmp_path / "a.jsonl", tmp_path / "b.jsonl")
    c = lv.compare_runs(tmp_path / "a.jsonl", tmp_path / "b.jsonl", allow_different=True)
    assert isinstance(c, lv.SuiteRunComparison) and not c.changed
    write_run(tmp_path / "one.jsonl", story("m"), [lv.Sample(index=0, text="a")])
    with pytest.raises(lv.ConfigError, match="one run is a suite's and the other one"):
        lv.compare_runs(tmp_path / "a.jsonl", tmp_path / "one.jsonl")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_the_compare_command_exits_like_diff_and_writes_json_and_html(tmp_path: Path) -> None:
    request = story("m")
    same = [lv.Sample(index=i, text="same") for i in range(10)]
    varied = [lv.Sample(index=i, text="same" if i < 3 else f"v{i % 2}\u202e")
              for i in range(10)]
    for name, samples in (("a", same), ("b", same), ("c", varied)):
        write_run(tmp_path / f"{name}.jsonl", request, samples)
    out = run("compare", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("verdict: no change detected")
    page = tmp_path / "page.html"
    out = run("compare", str(tmp_path / "a.jsonl"), str(tmp_path / "c.jsonl"), "--json",
              "--html", str(page))
    assert out.returncode == 1, out.stderr
    found = json.loads(out.stdout)
    assert found["kind"] == "run" and found["changed"] is True
    assert found["mode"]["changed"] is True and found["more_variable"]["pvalue"] < 0.01
    html = page.read_text()
    assert "llmvariance compare" in html and "b varies more than a" in html
    assert "\u202e" not in html and "U+202E" in html  # the override is shown, not obeyed
    out = run("compare", str(tmp_path / "a.jsonl"), str(tmp_path / "nope.jsonl"))
    assert out.returncode == 2 and "cannot read" in out.stderr

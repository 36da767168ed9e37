"""sample_many through the MockTransport seam: no sockets, exact behaviour."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import orjson
import pytest

import llmvariance as lv
from llmvariance.testing import SimServer

pytestmark = pytest.mark.anyio

KEY = "sk-live-TOPSECRET-abcdef123456"
EP = lv.Endpoint(base_url="http://127.0.0.1:9/v1", api_key=KEY)
REQ = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])


def chat_body(text: str, fingerprint: str = "fp_1") -> bytes:
    return orjson.dumps({
        "model": "m", "system_fingerprint": fingerprint,
        "choices": [{"message": {"content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    })


def fail(exc: Exception) -> lv.HTTPResponse:
    raise exc


class Gate:
    """Counts requests in flight; holds them until ``width`` are in flight at once."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls = 0
        self.opened = anyio.Event()

    async def __call__(self, request: lv.HTTPRequest) -> lv.HTTPResponse:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self.in_flight >= self.width:
            self.opened.set()
        await self.opened.wait()
        await anyio.lowlevel.checkpoint()
        self.in_flight -= 1
        return lv.HTTPResponse(200, chat_body(f"out {self.calls % 3}"))


@pytest.mark.parametrize(("n", "concurrency"), [(30, 7), (5, 8), (100, 1), (64, 64)])
async def test_pool_fills_and_never_exceeds_the_concurrency_limit(n: int, concurrency: int
                                                                  ) -> None:
    gate = Gate(min(n, concurrency))
    with anyio.fail_after(10):  # a pool that under-fills would never open the gate
        result = await lv.sample_many(REQ, n, endpoint=EP, concurrency=concurrency,
                                      transport=lv.MockTransport(gate))
    assert gate.max_in_flight == min(n, concurrency)
    assert gate.calls == n
    assert [s.index for s in result.samples] == list(range(n))


async def test_samples_are_ordered_by_index_whatever_the_completion_order() -> None:
    # Later requests finish first: request i waits until request i+1 has finished.
    n = 6
    finished = [anyio.Event() for _ in range(n + 1)]
    finished[n].set()
    started = 0

    async def handler(request: lv.HTTPRequest) -> lv.HTTPResponse:
        nonlocal started
        i = started
        started += 1
        await finished[i + 1].wait()
        finished[i].set()
        return lv.HTTPResponse(200, chat_body(f"answer {i}"))

    seen: list[int] = []
    result = await lv.sample_many(REQ, n, endpoint=EP, concurrency=n,
                                  transport=lv.MockTransport(handler),
                                  on_sample=lambda s: seen.append(s.index))
    assert seen == [5, 4, 3, 2, 1, 0]
    assert [s.index for s in result.samples] == list(range(n))
    assert [s.text for s in result.samples] == [f"answer {i}" for i in range(n)]


async def test_every_failure_becomes_a_sample_with_its_reason() -> None:
    outcomes = [
        lambda: lv.HTTPResponse(200, chat_body("fine")),
        lambda: lv.HTTPResponse(500, b'{"error": {"message": "boom"}}'),
        lambda: lv.HTTPResponse(200, b"{not json"),
        lambda: fail(lv.ConnectError("connection reset")),
        lambda: fail(lv.RequestTimeout("no response within the timeout")),
        lambda: lv.HTTPResponse(400, b'{"error": {"message": "max_tokens is too large"}}'),
    ]

    answers = iter(outcomes)

    def handler(request: lv.HTTPRequest) -> lv.HTTPResponse:
        return next(answers)()

    result = await lv.sample_many(REQ, 6, endpoint=EP, concurrency=1,
                                  retry=lv.RetryPolicy(max_attempts=1),
                                  transport=lv.MockTransport(handler))
    errors = [s.error for s in result.samples]
    assert errors[0] is None and result.samples[0].text == "fine"
    assert errors[1] == lv.SampleError(kind="http_status", status=500, message="HTTP 500: boom")
    assert errors[2] is not None and errors[2].kind == "malformed_response"
    assert errors[3] == lv.SampleError(kind="connection", message="connection reset")
    assert errors[4] is not None and errors[4].kind == "timeout"
    assert errors[5] == lv.SampleError(kind="http_status", status=400,
                                       message="HTTP 400: max_tokens is too large")
    assert result.report.n_ok == 1
    assert result.report.failures == {"http_status": 2, "malformed_response": 1,
                                      "connection": 1, "timeout": 1}
    assert len(result.failures) == 5


async def test_key_echoed_by_a_server_is_redacted_everywhere() -> None:
    def handler(request: lv.HTTPRequest) -> lv.HTTPResponse:
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        return lv.HTTPResponse(401, orjson.dumps({"error": {"message": f"bad key {KEY}"}}))

    result = await lv.sample_many(REQ, 2, endpoint=EP, transport=lv.MockTransport(handler))
    assert result.samples[0].error is not None
    assert result.samples[0].error.message == "HTTP 401: bad key ***"
    everything = result.model_dump_json() + repr(result) + str(result.report)
    assert KEY not in everything


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"n": 0}, "n"), ({"n": -3}, "n"), ({"n": 2.5}, "n"), ({"n": True}, "n"),
     ({"concurrency": 0}, "concurrency"), ({"concurrency": -1}, "concurrency")],
)
async def test_bad_arguments_send_nothing_and_name_the_field(kwargs: dict, field: str) -> None:
    calls = 0

    def handler(request: lv.HTTPRequest) -> lv.HTTPResponse:
        nonlocal calls
        calls += 1
        return lv.HTTPResponse(200, chat_body("x"))

    args = {"n": 3, "endpoint": EP, "transport": lv.MockTransport(handler), **kwargs}
    with pytest.raises(lv.ConfigError) as info:
        await lv.sample_many(REQ, **args)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert calls == 0


async def test_a_dict_instead_of_a_request_is_refused() -> None:
    with pytest.raises(lv.ConfigError, match=r"^request: must be one of ChatRequest, .*; got dict"):
        await lv.sample_many({"model": "m"}, 3, endpoint=EP)  # type: ignore[arg-type]


async def test_runs_sharing_a_pool_share_its_limit() -> None:
    gate = Gate(4)
    async with lv.ClientPool(EP, concurrency=4, transport=lv.MockTransport(gate)) as pool:
        results: list[lv.SampleSet] = []

        async def run() -> None:
            results.append(await lv.sample_many(REQ, 10, pool=pool))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                tg.start_soon(run)
    assert gate.max_in_flight == 4
    assert [len(r.samples) for r in results] == [10, 10]


async def test_the_request_body_is_encoded_once_and_identical_for_every_sample() -> None:
    bodies: list[bytes | None] = []

    def handler(request: lv.HTTPRequest) -> lv.HTTPResponse:
        bodies.append(request.body)
        return lv.HTTPResponse(200, chat_body("x"))

    await lv.sample_many(REQ, 5, endpoint=EP, transport=lv.MockTransport(handler))
    assert len(bodies) == 5 and len(set(bodies)) == 1
    assert orjson.loads(bodies[0] or b"") == {
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.0}


def test_sample_many_sync_runs_without_a_loop() -> None:
    texts = iter(["a", "b", "a"])
    result = lv.sample_many_sync(
        REQ, 3, endpoint=EP, concurrency=1,
        transport=lv.MockTransport(lambda r: lv.HTTPResponse(200, chat_body(next(texts)))))
    assert result.texts == ["a", "b", "a"]
    assert result.report.unique_count == 2
    assert result.samples[0].system_fingerprint == "fp_1"


async def test_sample_many_sync_runs_inside_a_running_loop_in_a_thread() -> None:
    # a notebook cell: the caller's loop is running (and blocked while the cell runs), so
    # the run gets a loop in a thread of its own
    body = orjson.dumps({"choices": [{"message": {"content": "same"}}]})
    result = lv.sample_many_sync(REQ, 3, endpoint=EP, transport=lv.MockTransport(
        lambda request: lv.HTTPResponse(200, body)))
    assert [s.text for s in result.samples] == ["same"] * 3
    # a pool belongs to the caller's loop and cannot cross into the thread: say what to do
    async with lv.ClientPool(EP) as pool:
        with pytest.raises(RuntimeError, match=r"use `await lv.sample_many\(\.\.\.\)`"):
            lv.sample_many_sync(REQ, 1, pool=pool)
    # the caller's exception, raised in the thread, comes out as itself
    with pytest.raises(lv.ConfigError, match=r"^n: "):
        lv.sample_many_sync(REQ, 0, endpoint=EP)


async def test_pool_repr_shows_state_and_no_secret() -> None:
    async with lv.ClientPool(EP, concurrency=3,
                             transport=lv.MockTransport(lambda r: lv.HTTPResponse(200))) as pool:
        assert repr(pool) == "<ClientPool endpoint='127.0.0.1:9' concurrency=3 in_flight=0>"
        assert KEY not in repr(pool)


async def test_cancelling_a_run_stops_promptly_and_leaves_nothing_behind() -> None:
    started = 0
    all_started = anyio.Event()

    async def hang(request: lv.HTTPRequest) -> lv.HTTPResponse:
        nonlocal started
        started += 1
        if started == 4:
            all_started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    before = set(asyncio.all_tasks())
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: lv.sample_many(REQ, 100, endpoint=EP, concurrency=4,
                                                 transport=lv.MockTransport(hang)))
            await all_started.wait()
            tg.cancel_scope.cancel()
    await anyio.lowlevel.checkpoint()
    assert started == 4  # nothing more was sent after the cancel
    assert set(asyncio.all_tasks()) - before == set()


async def test_without_keeping_samples_memory_stays_flat_as_n_grows() -> None:
    import tracemalloc

    body = orjson.dumps({"choices": [{"message": {"content": "word " * 50},
                                      "finish_reason": "length"}]})
    transport = lv.MockTransport(lambda r: lv.HTTPResponse(200, body))
    endpoint = lv.Endpoint(base_url="http://127.0.0.1:9/v1")
    request = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    peaks = []
    for n in (5_000, 50_000):
        tracemalloc.start()
        try:
            result = await lv.sample_many(request, n, endpoint=endpoint, transport=transport,
                                          concurrency=32, keep_samples=False)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert result.samples == [] and not result.kept_samples
        assert result.report.n_samples == n and result.report.unique_count == 1
    assert peaks[1] < 2 * 2**20 and peaks[1] < 1.5 * peaks[0] + 256 * 2**10


async def test_without_keeping_samples_the_report_and_resume_are_the_same(
        tmp_path: Path) -> None:
    async with SimServer(step_time_s=0.001) as url:
        endpoint = lv.Endpoint(base_url=url)
        request = lv.ChatRequest(model="moe", messages=[{"role": "user", "content": "Go"}],
                                 max_tokens=16)
        path = tmp_path / "run.jsonl"
        await lv.sample_many(request, 10, endpoint=endpoint, output=path, concurrency=10)
        lean = await lv.sample_many(request, 25, endpoint=endpoint, output=path,
                                    concurrency=10, keep_samples=False)
    assert lean.samples == [] and lean.report.n_samples == 25
    from_file = lv.VarianceCollector()
    from_file.update(lv.read_run(path).iter_samples())
    assert from_file.report() == lean.report


async def test_stream_samples_yields_every_sample_as_it_completes(tmp_path: Path) -> None:
    async with SimServer(step_time_s=0.001) as url:
        request = lv.ChatRequest(model="moe", messages=[{"role": "user", "content": "Go"}],
                                 max_tokens=12)
        path = tmp_path / "run.jsonl"
        seen: list[lv.Sample] = []
        async with lv.stream_samples(request, 40, endpoint=lv.Endpoint(base_url=url),
                                     concurrency=8, output=path) as run:
            async for sample in run:
                seen.append(sample)
    assert sorted(s.index for s in seen) == list(range(40))
    assert run.result.samples == [] and run.result.report == lv.analyze(seen)
    assert len(lv.read_run(path)) == 40


async def test_a_slow_reader_slows_the_run_and_leaving_early_cancels_it() -> None:
    sent: list[int] = []

    def handler(request: lv.HTTPRequest) -> lv.HTTPResponse:
        sent.append(1)
        return lv.HTTPResponse(200, b'{"choices": [{"message": {"content": "x"}}]}')

    request = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    async with lv.stream_samples(request, 10_000, endpoint=lv.Endpoint(
            base_url="http://127.0.0.1:9/v1"), transport=lv.MockTransport(handler),
            concurrency=4) as run:
        async for sample in run:
            assert sample.ok
            if len(sent) >= 20:
                break
        # nothing was read for a while: the run waits on its reader instead of racing on
        await anyio.lowlevel.checkpoint()
        backlog = len(sent)
    assert backlog <= 20 + 4 + 4 + 1  # read + channel + in flight, of 10,000
    with pytest.raises(RuntimeError, match="has not finished"):
        _ = run.result


async def test_stream_samples_refuses_keep_samples_and_hands_over_config_errors() -> None:
    request = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(TypeError, match="keep_samples"):  # no such parameter: typed away
        lv.stream_samples(request, 5, keep_samples=True)  # type: ignore[call-arg]

    async def read_all() -> None:
        async with lv.stream_samples(request, 0, endpoint=lv.Endpoint(
                base_url="http://127.0.0.1:9/v1")) as run:
            async for _ in run:
                pass

    with pytest.raises(lv.ConfigError, match=r"^n: "):
        await read_all()


def test_sample_many_sync_runs_on_uvloop_unless_opted_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    loops: list[str] = []
    request = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])

    def once() -> None:
        lv.sample_many_sync(
            request, 2, endpoint=lv.Endpoint(base_url="http://127.0.0.1:9/v1"),
            transport=lv.MockTransport(lambda r: lv.HTTPResponse(
                200, b'{"choices": [{"message": {"content": "x"}}]}')),
            on_sample=lambda s: loops.append(type(asyncio.get_running_loop()).__module__))

    once()
    monkeypatch.setenv("LLMVARIANCE_UVLOOP", "0")
    once()
    assert loops[0].startswith("uvloop") and loops[-1].startswith("asyncio")


async def test_a_run_keeping_samples_defers_young_collections_and_restores_the_thresholds(
        ) -> None:
    import gc

    before = gc.get_threshold()
    during: list[int] = []
    transport = lv.MockTransport(lambda r: lv.HTTPResponse(200, chat_body("same")))

    async def run(n: int, keep: bool) -> None:
        await lv.sample_many(REQ, n, endpoint=EP, transport=transport, keep_samples=keep,
                             on_sample=lambda s: during.append(gc.get_threshold()[0]))

    await run(5, True)
    assert set(during) == {100_000}  # a kept sample per ~120 responses would rescan them all
    assert gc.get_threshold() == before
    during.clear()
    await run(5, False)  # nothing piles up: nothing changed
    assert set(during) == {before[0]}
    during.clear()
    async with anyio.create_task_group() as tg:  # overlapping runs: restored by the last
        tg.start_soon(run, 50, True)
        tg.start_soon(run, 5, True)
    assert set(during) == {100_000} and gc.get_threshold() == before

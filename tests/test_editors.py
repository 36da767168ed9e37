"""What an editor sees: plain-dict messages type-check, the helpers' real signatures catch
typos, and those signatures cannot drift from the functions they wrap."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import llmvariance as lv

SNIPPET = '''
import llmvariance as lv

ok = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
ok2 = lv.MessagesRequest(model="m", max_tokens=8, messages=[{"role": "user", "content": "x"}])
ok3 = lv.ResponsesRequest(model="m", input=[{"role": "user", "content": "x"}])
lv.sample_many_sync(ok, n="30")
lv.sample_many_sync(ok, 30, concurency=8)
lv.stream_samples(ok, 5, concurency=8)
lv.sample_suite_sync([ok], 5, concurency=8)
lv.ChatRequest(model="m", messages=[{"role": "usr", "content": "hi"}])
'''


def test_mypy_strict_accepts_dict_messages_and_catches_typos(tmp_path: Path) -> None:
    (tmp_path / "snippet.py").write_text(SNIPPET)
    (tmp_path / "mypy.ini").write_text("[mypy]\n")  # a user's: no pydantic plugin
    out = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                          "--config-file", "mypy.ini", "snippet.py"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, check=False)
    errors = [line for line in out.stdout.splitlines() if ": error:" in line]
    lines = sorted({int(line.split(":")[1]) for line in errors})
    assert lines == [7, 8, 9, 10, 11], out.stdout  # the first three lines are fine
    assert 'Argument "n" to "sample_many_sync" has incompatible type "str"' in out.stdout
    assert out.stdout.count('did you mean "concurrency"?') == 3


def _parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_the_sync_and_stream_helpers_take_exactly_their_functions_arguments() -> None:
    assert _parameters(lv.sample_many_sync) == _parameters(lv.sample_many)
    assert _parameters(lv.sample_suite_sync) == _parameters(lv.sample_suite)
    assert _parameters(lv.stream_samples) == [
        p for p in _parameters(lv.sample_many) if p not in ("on_sample", "keep_samples")]


def test_the_typed_request_initialisers_name_every_field() -> None:
    """The ``__init__`` a type checker sees (``if TYPE_CHECKING``) has one keyword per field."""
    source = ast.parse(Path(inspect.getfile(lv.ChatRequest)).read_text())
    stubs = {node.name: node for node in ast.walk(source) if isinstance(node, ast.ClassDef)}
    for cls in (lv.ChatRequest, lv.MessagesRequest, lv.ResponsesRequest):
        init = next(n for n in ast.walk(stubs[cls.__name__])
                    if isinstance(n, ast.FunctionDef) and n.name == "__init__")
        assert sorted(a.arg for a in init.args.kwonlyargs) == sorted(cls.model_fields), cls

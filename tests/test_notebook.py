"""The quick start in a real Jupyter kernel (nbclient + ipykernel): ``sample_many_sync``
works inside the kernel's running event loop, and results display as one line of text and
a short HTML view, never as a dump of every sample."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import served
from test_readme import BLOCKS

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

CLI = [sys.executable, "-m", "llmvariance"]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with served() as url:
        yield url


def _run(cells: list[str]) -> list[Any]:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                     allow_errors=False)
    client.execute()
    return [cell.outputs for cell in notebook.cells]


def _data(outputs: list[Any], kind: str) -> list[str]:
    return [o["data"][kind] for o in outputs
            if o.get("output_type") == "execute_result" and kind in o.get("data", {})]


def test_the_quick_start_runs_in_a_kernel_and_results_display_briefly(url: str) -> None:
    quick = next(b for b in BLOCKS if "sample_many_sync(req, n=30" in b.code).code
    quick = quick.replace("http://127.0.0.1:8000/v1", url)
    outputs = _run([
        quick,       # sample_many_sync inside the kernel's running loop
        "result",
        "result.report",
        "result.report.tree",
        "again = await lv.sample_many(req, n=5, endpoint=ep)\nagain",
        "lv.analyze_suite({'a': ['x', 'y'], 'b': ['z', 'z']})",
        "lv.compare(['x'] * 30, ['x'] * 25 + ['y'] * 5)",
    ])
    printed = "".join(o.get("text", "") for o in outputs[0] if o["output_type"] == "stream")
    assert "samples           30 (30 ok, 0 failed)" in printed
    assert "divergence tree: 30 samples" in printed
    expected = ["<SampleSet moe@", "<VarianceReport n=30 ok=30 distinct=",
                "<DivergenceTree n=30 distinct=", "<SampleSet moe@",
                "<SuiteReport prompts=2 n=2 TARr@2=0.5", "<Comparison a n=30 vs b n=30"]
    for cell, start in zip(outputs[1:], expected, strict=True):
        [plain] = _data(cell, "text/plain")
        [html] = _data(cell, "text/html")
        assert plain.startswith(start) and "\n" not in plain and len(plain) < 200, plain
        assert html.startswith('<div class="lv-nb">') and len(html) < 60_000
        assert "<script" not in html
    [report_html] = _data(outputs[2], "text/html")
    assert "30 ok, 0 failed" in report_html and "Top outputs" in report_html
    [suite_html] = _data(outputs[5], "text/html")
    assert "TARr@2" in suite_html and "0.500" in suite_html

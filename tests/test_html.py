"""The HTML report: escaped, self-contained, and rendered by a real headless Chromium."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

import llmvariance as lv
from llmvariance._render.html import safe_url
from moe_runs import moe_run

S = lv.Sample
CLI = [sys.executable, "-m", "llmvariance"]
NAMESPACES = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
"""What an inline SVG declares; identifiers, never fetched."""
HOSTILE = '<script>alert("x")</script> & "quotes" <img src=x onerror=alert(1)>'


class Dom(HTMLParser):
    """Element ids, classes, tags and attributes of a page, its text and its CSS."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.classes: list[str] = []
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []
        self.text: list[str] = []
        self.css: list[str] = []
        self._in_style = False
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._in_style = tag == "style"
        for name, value in attrs:
            self.attributes.append((name, value or ""))
            if name == "id" and value:
                self.ids.append(value)
            if name == "class" and value:
                self.classes.extend(value.split())
            if name == "style" and value:
                self.css.append(value)

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        (self.css if self._in_style else self.text).append(data)


def external_references(page: str) -> list[str]:
    """What a browser would fetch for the page: every attribute value that is a URL (or a
    path) other than a #fragment or an SVG namespace, and every CSS url() or @import."""
    dom = Dom(page)
    found = [value for name, value in dom.attributes
             if name in {"src", "href", "xlink:href", "action", "poster", "data", "srcset",
                         "background"} and not value.startswith("#")]
    found += [value for name, value in dom.attributes
              if "://" in value and not (name.startswith("xmlns") and value in NAMESPACES)]
    css = " ".join(dom.css)
    found += re.findall(r"url\(\s*['\"]?(?!#)([^)'\"]*)", css)
    found += re.findall(r"@import[^;]*", css)
    return found


def test_every_string_from_the_server_is_escaped() -> None:
    samples = [S(index=0, text=HOSTILE, system_fingerprint="<fp onload=x>"),
               S(index=1, text=HOSTILE, system_fingerprint="<fp onload=x>"),
               S(index=2, text=HOSTILE[:20] + "</mark></p><p>", system_fingerprint="fp2"),
               S(index=3, error=lv.SampleError(kind="http_status", status=500,
                                               message="HTTP 500: <b>boom</b>"))]
    page = lv.html_report(lv.analyze(samples), tree=lv.divergence_tree(samples))
    assert "<script" not in page.lower() and "<img" not in page and "<b>boom" not in page
    assert "<fp" not in page and "</mark></p><p>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;quotes&quot;" in page
    assert "HTTP 500: &lt;b&gt;boom&lt;/b&gt;" in page
    assert external_references(page) == []


def test_the_endpoint_is_shown_without_credentials(tmp_path: Path) -> None:
    assert safe_url("https://u:pw@api.example.test:8443/v1?key=SECRET&alt=json") == (
        "https://u:***@api.example.test:8443/v1?key=***&alt=***")
    path = tmp_path / "run.jsonl"
    header = {"record": "header", "format": "llmvariance.run/1", "library_version": "0.1.0",
              "started_at": "2026-11-28T00:00:00Z", "n": 1,
              "request": {"kind": "chat", "model": "m", "messages": [
                  {"role": "user", "content": "hi"}], "extra": {"api_key": "sk-LEAK-1"}},
              "endpoint": {"base_url": "http://user:sk-LEAK-2@127.0.0.1:1/v1?key=sk-LEAK-3",
                           "name": "local", "header_names": ["x-team"]}}
    sample = {"record": "sample", "index": 0, "text": "ok"}
    path.write_text("".join(json.dumps(record, separators=(",", ":")) + "\n"
                            for record in (header, sample)))
    run = lv.read_run(path)
    page = lv.html_report(lv.analyze(run.iter_samples()), runs=[run])
    assert "sk-LEAK" not in page
    assert "http://user:***@127.0.0.1:1/v1?key=***" in page
    assert "<td><bdi>x-team</bdi></td>" in page and "&quot;model&quot;: &quot;m&quot;" in page


def test_when_every_sample_failed_the_page_says_so_first() -> None:
    failed = [S(index=i, error=lv.SampleError(kind="http_status", status=404, message=(
        "HTTP 404: The model `gpt-4o-mini` does not exist."))) for i in range(3)]
    page = lv.html_report(lv.analyze(failed), tree=lv.divergence_tree(failed))
    summary = page[page.index('<section id="summary">'):]
    assert summary.index("Every sample failed (3 of 3)") < summary.index("cards")
    assert '<section id="failures">' in page and "does not exist." in page
    assert "<svg" not in page and "No successful samples to draw." in page
    assert 'class="card"' in page and page.count('class="card"') == 1  # samples only


def test_without_matplotlib_the_page_has_everything_but_figures(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    texts = ["one two three", "one two four", "one two three"]
    page = lv.html_report(lv.analyze(texts), tree=lv.divergence_tree(texts))
    assert "<svg" not in page and "Figures need matplotlib" in page
    assert page.count('<li class="node"') == 3


def test_groups_and_the_conditions_figure() -> None:
    pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    samples = [S(index=i, text=t, condition=c, system_fingerprint="fp")
               for i, (t, c) in enumerate([("a", "sequential")] * 4
                                          + [("a", "burst"), ("b", "burst"), ("c", "burst")])]
    page = lv.html_report(lv.analyze(samples))
    groups = page[page.index('<section id="groups">'):]
    groups = groups[: groups.index("</section>")]
    assert "<h3>By condition</h3>" in groups
    assert ("<tr><td><bdi>burst</bdi></td><td class=\"num\">3</td><td class=\"num\">0</td>"
            "<td class=\"num\">3</td>") in groups
    assert 'id="plot-conditions"' in page


# -- in a real browser -------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install "
                             "chromium; `python3 dev.py test` installs it as root in CI)")


def chromium(tmp: Path, url: str, *args: str) -> tuple[str, list[dict[str, object]]]:
    """Run headless Chromium on ``url``; return its stdout and the requests it made on
    behalf of the page (from its network log).

    A dead proxy on 127.0.0.1 and a resolver that resolves nothing keep Chromium's own
    background requests (updates, time, accounts) from leaving the machine; its profile,
    home and net log live in ``tmp``.
    """
    assert CHROMIUM is not None
    net_log = tmp / "net.json"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--no-first-run", "--disable-background-networking", "--disable-extensions",
               "--disable-component-update", "--disable-sync", "--disable-default-apps",
               "--disable-crash-reporter", "--proxy-server=http://127.0.0.1:9",
               "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={tmp / 'profile'}",
               f"--log-net-log={net_log}", *args, url]
    env = {**os.environ, "HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp),
           "XDG_CACHE_HOME": str(tmp)}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True, env=env, start_new_session=True) as proc:
        try:
            out, _ = proc.communicate(timeout=90)
        finally:  # its renderer and helper processes go with it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    log = json.loads(net_log.read_text())
    names = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    page_requests = [e["params"] for e in log["events"]
                     if names.get(e["type"]) == "URL_REQUEST_START_JOB"
                     and str(e["params"].get("network_isolation_key", "")).startswith("file")]
    return out, page_requests


@needs_chromium
def test_chromium_renders_the_moe_report_with_tree_and_figures_and_no_request(
        tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    run_file, html = tmp_path / "run.jsonl", tmp_path / "report.html"
    result = moe_run(run_file, 60)
    tree = lv.divergence_tree(result.samples)
    assert tree.unique_count >= 2
    out = subprocess.run([*CLI, "report", str(run_file), "--html", str(html)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == f"wrote {html}"
    page = html.read_text()
    assert external_references(page) == []

    dumped, requests = chromium(tmp_path, html.as_uri(), "--dump-dom")
    assert requests == []
    dom = Dom(dumped)
    for section in ("summary", "tree", "plots", "outputs", "run"):
        assert section in dom.ids
    assert {"plot-tree", "plot-entropy", "plot-divergence"} <= set(dom.ids)
    assert dom.tags.count("svg") == 3 and "script" not in dom.tags
    assert dom.classes.count("node") == len(tree.nodes)
    # each output after the first is highlighted from where it goes its own way
    outputs = dumped[dumped.index('<ol class="outputs">'):]
    assert outputs.count("<mark>") == len(result.report.top_outputs) - 1
    text = " ".join(dom.text)
    root = tree.root
    assert root is not None
    assert f"splits at token {root.end_token} (char {tree.split_char(root)})" in text
    assert f"{tree.n} samples, {tree.unique_count} distinct outputs" in text

    shot = tmp_path / "shot.png"
    chromium(tmp_path, html.as_uri(), f"--screenshot={shot}", "--window-size=1280,2400")
    image = shot.read_bytes()
    assert image[:8] == b"\x89PNG\r\n\x1a\n"
    pil = pytest.importorskip("PIL.Image")
    with pil.open(shot) as picture:
        assert picture.size == (1280, 2400)
        colors = picture.convert("RGB").getcolors(maxcolors=1 << 20) or []
    blue = sum(count for count, rgb in colors if rgb == (0x2A, 0x6F, 0x97))
    assert blue > 2000  # the tree's lines and count badges were painted


@needs_chromium
def test_the_network_check_sees_a_page_that_loads_something(tmp_path: Path) -> None:
    page = tmp_path / "loads.html"
    page.write_text('<!DOCTYPE html><p>x</p><img src="http://127.0.0.1:9/pixel.png">')
    assert external_references(page.read_text()) == ["http://127.0.0.1:9/pixel.png"] * 2
    assert external_references("<p>see http://example.test/ in text</p>") == []
    _, requests = chromium(tmp_path, page.as_uri(), "--dump-dom")
    assert [r["url"] for r in requests] == ["http://127.0.0.1:9/pixel.png"]


RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE, never closed
READING_ORDER = """<script>
(function () {
  // The report's own words: every text node outside a server string that holds no
  // invisible character itself. Each one's letters must run left to right on its line.
  var reversed = [], checked = 0;
  var walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (var node = walker.nextNode(); node; node = walker.nextNode()) {
    var text = node.data;
    if (!/[A-Za-z]{3}/.test(text) || /[^\\x20-\\x7e\\n]/.test(text)) continue;
    if (node.parentElement.closest("script, style, svg, title")) continue;
    checked += 1;
    var last = null, range = document.createRange();
    for (var i = 0; i < text.length; i++) {
      if (!/[A-Za-z0-9]/.test(text[i])) { continue; }
      range.setStart(node, i); range.setEnd(node, i + 1);
      var box = range.getBoundingClientRect();
      if (last && Math.abs(box.top - last.top) < 2 && box.left < last.left) {
        reversed.push(text.trim()); break;
      }
      last = box;
    }
  }
  document.body.setAttribute("data-checked", String(checked));
  document.body.setAttribute("data-reversed", JSON.stringify(reversed));
})();
</script>"""


@needs_chromium
def test_bidi_overrides_from_the_server_never_reverse_the_reports_own_words(
        tmp_path: Path) -> None:
    texts = [f"abc{RLO}", f"abd{RLO} more", "xyz"]
    samples = [S(index=i, text=texts[i % 3], finish_reason=f"stop{RLO}",
                 system_fingerprint=f"fp{RLO}", condition=f"c{RLO}") for i in range(8)]
    samples.append(S(index=8, error=lv.SampleError(kind="http_status", status=500,
                                                  message=f"HTTP 500: oops{RLO} said")))
    report = lv.analyze(samples)
    html = tmp_path / "bidi.html"
    page = lv.html_report(report, tree=lv.divergence_tree(samples), plots=False)
    html.write_text(page.replace("</body>", READING_ORDER + "</body>"))
    dumped, _ = chromium(tmp_path, html.as_uri(), "--dump-dom")
    checked = int(re.search(r'data-checked="(\d+)"', dumped).group(1))  # type: ignore[union-attr]
    found = re.search(r'data-reversed="([^"]*)"', dumped)
    assert found is not None
    reversed_words = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert checked > 40
    assert reversed_words == []
    # and the override is shown where it was, not acted on
    assert page.count("U+202E") >= 5 and RLO not in page


def test_an_experiment_page_shows_the_verdict_table_findings_and_how_to_read_it(
        tmp_path: Path) -> None:
    from llmvariance._experiment import analyze_conditions

    request = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    samples = {"sequential": [lv.Sample(index=i, text="<b>same</b>", block=i % 2)
                              for i in range(10)],
               "burst": [lv.Sample(index=i, text="<b>same</b>" if i < 4 else f"other {i}",
                                   block=i % 2) for i in range(10)]}
    result = analyze_conditions(request, "127.0.0.1:1", samples, resamples=999,
                                calibration=lv.Sample(index=0, text="cold <script>"))
    page = lv.html_report(result, tmp_path / "experiment.html", plots=False)
    assert (tmp_path / "experiment.html").read_text() == page
    assert "<b>batch_dependent</b>: outputs depend on how requests are batched" in page
    assert "<td><bdi>burst</bdi></td>" in page and "<td class=\"num\">6/10</td>" in page
    assert "control" in page and "How" not in page.split("<section")[0]
    assert "D</b> is the probability that two of its requests give different outputs" in page
    assert "never occurred again in 20 later requests" in page  # the cold calibration
    assert "<script>" not in page and "&lt;b&gt;same&lt;/b&gt;" in page
    report_page = lv.html_report(lv.analyze(["a"] * 30))
    assert "How to read this" in report_page and "≤ 9.5%" in report_page

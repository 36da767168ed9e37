"""The HTML report's stylesheet: system fonts only, readable on screen and on paper."""

from __future__ import annotations

__all__ = ["CSS"]

CSS = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #d9e2ec; --blue: #2a6f97;
        --red: #c8553d; --bg: #f7f9fb; --mark: #ffe8a3; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans",
       sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 48px; }
header h1 { margin: 0 0 2px; font-size: 26px; }
header .sub { margin: 0; color: var(--muted); }
nav { position: sticky; top: 0; z-index: 1; display: flex; flex-wrap: wrap; gap: 4px 18px;
      margin: 16px -28px 8px; padding: 10px 28px; background: rgba(247, 249, 251, 0.95);
      border-bottom: 1px solid var(--line); }
nav a { color: var(--blue); text-decoration: none; font-weight: 600; font-size: 14px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px;
          padding: 18px 22px; margin: 18px 0; }
h2 { margin: 0 0 10px; font-size: 20px; }
h3 { margin: 18px 0 8px; font-size: 16px; }
p { margin: 8px 0; }
.note { color: var(--muted); font-size: 13px; }
.headline { font-size: 17px; }
.headline.alert { color: #fff; background: var(--red); padding: 10px 14px;
                  border-radius: 8px; font-weight: 600; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(160px, 1fr));
         gap: 10px; margin: 12px 0; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px;
        display: flex; flex-direction: column; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
               letter-spacing: 0.04em; }
.card .value { font-size: 22px; font-weight: 650; }
.card .note { font-size: 12px; }
dl.counts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px;
            margin: 8px 0 0; font-size: 14px; }
dl.counts dt { color: var(--muted); }
dl.counts dd { margin: 0; }
table { border-collapse: collapse; width: 100%; font-size: 14px; margin: 6px 0; }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid var(--line);
         vertical-align: top; }
thead th { color: var(--muted); font-weight: 600; font-size: 12px; text-transform: uppercase; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv th { width: 220px; color: var(--muted); font-weight: 500; }
code, pre { font-family: ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", Menlo,
            monospace; font-size: 13px; }
pre { background: var(--bg); border: 1px solid var(--line); border-radius: 6px;
      padding: 10px 12px; overflow-x: auto; white-space: pre-wrap; word-break: break-word; }
figure.plot { margin: 10px 0; }
figure.plot svg { width: 100%; height: auto; display: block; }
ul.tree, ul.tree ul { list-style: none; margin: 0; padding: 0; }
ul.tree ul { margin-left: 14px; padding-left: 16px; border-left: 2px solid var(--line); }
ul.tree li { margin: 6px 0; }
ul.tree code { white-space: pre-wrap; word-break: break-word; background: var(--bg);
               padding: 1px 4px; border-radius: 4px; }
ul.tree .where { color: var(--muted); font-size: 13px; white-space: nowrap; }
ul.tree .ends { color: var(--muted); font-style: italic; }
ul.tree li.pruned { color: var(--muted); font-size: 13px; }
.count { display: inline-block; min-width: 2.6em; padding: 0 6px; border-radius: 10px;
         background: var(--blue); color: #fff; font-size: 12px; font-weight: 650;
         text-align: center; font-variant-numeric: tabular-nums; }
li.pruned .count { background: #9aa5b1; }
ol.outputs { padding-left: 0; list-style: none; }
ol.outputs li { margin: 12px 0; }
.output-head { font-size: 14px; color: var(--muted); }
.output-head b { color: var(--ink); }
p.output { margin: 4px 0; padding: 8px 12px; background: var(--bg); border-radius: 6px;
           font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 13px;
           white-space: pre-wrap; word-break: break-word; }
p.output .same { color: var(--muted); }
mark { background: var(--mark); color: var(--ink); padding: 0 1px; border-radius: 2px; }
mark.shared { background: #fdf6dc; color: var(--muted); }
.same { color: var(--muted); }
details summary { cursor: pointer; color: var(--muted); font-size: 13px; }
.run + .run { border-top: 1px solid var(--line); margin-top: 12px; padding-top: 12px; }
.invisible { display: inline-block; margin: 0 1px; padding: 0 3px; border: 1px solid var(--red);
             border-radius: 3px; color: var(--red); background: #fff; font: 600 10px/1.4
             ui-monospace, "DejaVu Sans Mono", monospace; vertical-align: 1px; }
tr.step td { background: #fff4e5; }
footer { color: var(--muted); font-size: 12px; text-align: center; margin-top: 24px; }
@media print { nav { display: none; } section { break-inside: avoid; } }
"""

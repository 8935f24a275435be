"""``report.html`` of ``python -m rlx.compare``: one self-contained file (inline CSS, SVG drawn by
inline JavaScript written here, the data as inline JSON), so it opens offline and can be mailed.

Interactive: tick metrics in the picker (every logged metric) for panels, choose the x-axis (step,
samples seen, response tokens, wall-clock: those the runs have; ``#metrics=a,b&x=wall&seeds=1`` in the
URL opens that view), click a legend entry to hide/show a group, a slider smooths the curves (moving
average over logged steps), the band (± 1 std over a group's runs) and the individual seeds can be
toggled, evaluations are points with binomial-SE error bars, and hovering a panel shows every group's
value at that step; a panel names the groups with no data or no signal for it and why (``D.why``,
rlx.report.nosignal). Then the summary table, the statistics over seeds (rlx.report.seedstats) and
the sampled completions (``samples.jsonl``) of every group side by side. A script error is shown on
the page and recorded in ``<html data-js-errors>``; a finished render sets ``<html data-rendered="<panels>">``.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from rlx.report import seedstats
from rlx.report.page import TEMPLATE
from rlx.report.png import COLORS
from rlx.report.script import SCRIPT


def _clean(x):
    """JSON-safe and compact: non-finite -> null, floats to 5 significant digits."""
    if isinstance(x, float):
        return float(f"{x:.5g}") if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def _table(header, cells, cls: str = "") -> str:
    esc = html.escape
    out = f"<table class='{cls}'>" if cls else "<table>"
    out += "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>"
    return out + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in cells) + "</tbody></table>"


def stats_html(s: dict | None) -> str:
    """The statistics over seeds (``rlx.report.seedstats``): per group, against the baseline, warnings."""
    if not s or not s["metrics"]:
        return ""
    out = f"<h2 id='stats'>Statistics over seeds</h2><div class='notes'>{html.escape(seedstats.notes(s))}</div>"
    out += _table(seedstats.GROUP_HEADER, seedstats.group_cells(s), "stats groups")
    pairs = seedstats.pair_cells(s)
    if pairs:
        out += f"<h3>Against the baseline, {html.escape(s['baseline'])}</h3>"
        out += _table(seedstats.pair_header(s), pairs, "stats pairs")
    out += "".join(f"<div class='warn'>warning: {html.escape(w)}</div>" for w in s["warnings"])
    return out + "".join(f"<div class='suggest'>{html.escape(x)}</div>" for x in s["suggestions"])


def write_html(path: Path, *, title, notes, panels, labels, curves, runs, header, cells, failed, window,
               titles=None, xmap=None, samples="", stats=None, why=None) -> None:
    data = {"panels": [{"key": k, "title": t} for k, t in panels], "labels": labels, "curves": curves,
            "runs": runs, "colors": COLORS, "window": window, "metrics": sorted(curves), "why": why or {},
            "titles": titles or dict(panels), "xmap": {a: {g: {str(s): x for s, x in m.items()} for g, m in by.items()}
                                                       for a, by in (xmap or {}).items()}}
    payload = json.dumps(_clean(data), separators=(",", ":")).replace("</", "<\\/")
    esc = html.escape
    table = _table(header, cells)
    fail = ""
    if failed:
        fail = ("<h2>Runs that did not finish</h2><table><thead><tr><th>run</th><th>status</th><th>reason</th>"
                "</tr></thead><tbody>" + "".join(f"<tr><td>{esc(n)}</td><td>{esc(s)}</td><td>{esc(r)}</td></tr>"
                                                  for n, s, r in failed) + "</tbody></table>")
    page = (TEMPLATE.replace("%TITLE%", esc(title)).replace("%NOTES%", esc(notes)).replace("%TABLE%", table)
            .replace("%STATS%", stats_html(stats))
            .replace("%FAILED%", fail).replace("%DATA%", payload).replace("%SCRIPT%", SCRIPT)
            .replace("%SAMPLES%", samples))   # last: completions are arbitrary text
    Path(path).write_text(page, encoding="utf-8")

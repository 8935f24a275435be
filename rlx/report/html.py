"""``report.html`` of ``python -m rlx.compare``: one self-contained file (inline CSS, SVG drawn by
inline JavaScript written here, the data as inline JSON), so it opens offline and can be mailed.

Interactive: click a legend entry to hide/show a group, a slider smooths the curves (moving average
over logged steps), the band (± 1 std over a group's runs) and the individual runs can be toggled,
and hovering a panel shows every group's value at that step. A script error is shown on the page and
recorded in ``<html data-js-errors>``; a finished render sets ``<html data-rendered="<panels>">``.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from rlx.report.png import COLORS


def _clean(x):
    """JSON-safe and compact: non-finite -> null, floats to 5 significant digits."""
    if isinstance(x, float):
        return float(f"{x:.5g}") if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def write_html(path: Path, *, title, notes, panels, labels, curves, runs, header, cells, failed, window) -> None:
    data = {"panels": [{"key": k, "title": t} for k, t in panels], "labels": labels, "curves": curves,
            "runs": runs, "colors": COLORS, "window": window}
    payload = json.dumps(_clean(data), separators=(",", ":")).replace("</", "<\\/")
    esc = html.escape
    table = "<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>"
    table += "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in cells)
    table += "</tbody></table>"
    fail = ""
    if failed:
        fail = ("<h2>Runs that did not finish</h2><table><thead><tr><th>run</th><th>status</th><th>reason</th>"
                "</tr></thead><tbody>" + "".join(f"<tr><td>{esc(n)}</td><td>{esc(s)}</td><td>{esc(r)}</td></tr>"
                                                  for n, s, r in failed) + "</tbody></table>")
    page = (TEMPLATE.replace("%TITLE%", esc(title)).replace("%NOTES%", esc(notes)).replace("%TABLE%", table)
            .replace("%FAILED%", fail).replace("%DATA%", payload).replace("%SCRIPT%", SCRIPT))
    Path(path).write_text(page, encoding="utf-8")


TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>%TITLE%</title>
<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  window.__errors.push(String(e.message));
  document.documentElement.setAttribute("data-js-errors", window.__errors.join(" | "));
  var b = document.getElementById("errors");
  if (b) { b.style.display = "block"; b.textContent = "Script error: " + window.__errors.join(" | "); }
});
</script>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 20px; color: #222; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 8px; }
.notes { color: #555; margin-bottom: 10px; }
#errors { display: none; background: #fdd; border: 1px solid #c00; padding: 6px; margin: 8px 0; }
#controls { margin: 10px 0; display: flex; gap: 18px; align-items: center; flex-wrap: wrap; }
#legend { display: flex; flex-wrap: wrap; gap: 6px; margin: 6px 0 12px; }
#legend button { border: 1px solid #bbb; background: #fff; border-radius: 4px; padding: 2px 8px; cursor: pointer;
  font: inherit; font-size: 13px; }
#legend button.off { opacity: 0.35; }
#legend .sw { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 5px;
  vertical-align: -1px; }
#panels { display: grid; grid-template-columns: repeat(auto-fill, minmax(430px, 1fr)); gap: 14px; }
.panel { border: 1px solid #ddd; border-radius: 6px; padding: 6px 8px; position: relative; }
.panel h3 { font-size: 13px; margin: 0; } .panel .key { color: #888; font-size: 11px; }
svg.chart { width: 100%; height: auto; display: block; }
svg text { font-size: 10px; fill: #555; }
.tip { position: absolute; pointer-events: none; background: rgba(255,255,255,0.95); border: 1px solid #aaa;
  border-radius: 4px; padding: 4px 6px; font-size: 11px; display: none; white-space: nowrap; z-index: 2; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; } th { background: #f4f4f4; }
</style></head>
<body>
<h1>%TITLE%</h1>
<div class="notes">%NOTES%</div>
<div id="errors"></div>
<div id="controls">
  <label>smoothing <input id="smooth" type="range" min="1" max="50" value="1"> <span id="smoothv">1</span></label>
  <label><input id="band" type="checkbox" checked> ± 1 std band</label>
  <label><input id="runs" type="checkbox"> individual runs</label>
</div>
<div id="legend"></div>
<div id="panels"></div>
<h2>Summary</h2>
%TABLE%
%FAILED%
<script type="application/json" id="data">%DATA%</script>
<script>
%SCRIPT%
</script>
</body></html>
"""

SCRIPT = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("data").textContent);
  var NS = "http://www.w3.org/2000/svg";
  var W = 440, H = 250, M = {l: 56, r: 12, t: 10, b: 30};
  var labels = D.labels;  // group order = colour order, as in report.png
  var state = {hidden: {}, smooth: D.window || 1, band: true, runs: false};

  function color(g) { return D.colors[labels.indexOf(g) % D.colors.length]; }
  function el(tag, attrs, parent) {
    var e = document.createElementNS(NS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function smooth(a, w) {
    if (w <= 1) return a.slice();
    var out = [], acc = 0, n = 0, q = [];
    for (var i = 0; i < a.length; i++) {
      var v = a[i];
      q.push(v); if (v !== null) { acc += v; n++; }
      if (q.length > w) { var o = q.shift(); if (o !== null) { acc -= o; n--; } }
      out.push(n ? acc / n : null);
    }
    return out;
  }
  function ticks(lo, hi, n) {
    if (!(hi > lo)) { hi = lo + 1; lo = lo - 1; }
    var step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
    var err = (hi - lo) / n / step;
    step *= err >= 5 ? 10 : err >= 2 ? 5 : err >= 1.5 ? 2 : 1;
    var out = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(+t.toPrecision(12));
    out.step = step;
    return out;
  }
  function tickLabel(t, step) {  // as many decimals as the tick spacing needs
    if (Math.abs(t) < step * 1e-6) return "0";
    var e = Math.floor(Math.log10(step) + 1e-9), a = Math.abs(t);
    if (a < 1e5 && e >= -4) return t.toFixed(Math.max(0, -e));
    return t.toExponential(Math.max(0, Math.floor(Math.log10(a)) - e));
  }
  function fmt(v) {
    if (v === null || v === undefined) return "–";
    var a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(2) : +v.toPrecision(4) + "";
  }
  function win(key) { return key.indexOf("eval/") === 0 ? 1 : state.smooth; }  // evaluations: never smoothed
  function series(key, g) {
    var c = D.curves[key][g], w = win(key);
    return {steps: c.steps, mean: smooth(c.mean, w), lo: smooth(c.lo, w), hi: smooth(c.hi, w), n: c.n};
  }
  function path(xs, ys, sx, sy) {
    var d = "", pen = false;
    for (var i = 0; i < xs.length; i++) {
      if (ys[i] === null) { pen = false; continue; }
      d += (pen ? "L" : "M") + sx(xs[i]).toFixed(1) + "," + sy(ys[i]).toFixed(1);
      pen = true;
    }
    return d;
  }

  function drawPanel(box, p) {
    var visible = labels.filter(function (g) { return D.curves[p.key][g] && !state.hidden[g]; });
    var data = {}, xmin = Infinity, xmax = -Infinity, ymin = Infinity, ymax = -Infinity;
    function extend(xs, ys) {
      for (var i = 0; i < xs.length; i++) {
        if (ys[i] === null) continue;
        xmin = Math.min(xmin, xs[i]); xmax = Math.max(xmax, xs[i]);
        ymin = Math.min(ymin, ys[i]); ymax = Math.max(ymax, ys[i]);
      }
    }
    visible.forEach(function (g) {
      var s = data[g] = series(p.key, g);
      extend(s.steps, s.mean);
      if (state.band) { extend(s.steps, s.lo); extend(s.steps, s.hi); }
      if (state.runs) (D.runs[p.key][g] || []).forEach(function (r) { extend(r.steps, smooth(r.values, win(p.key))); });
    });
    box.querySelector("svg") && box.removeChild(box.querySelector("svg"));
    var svg = el("svg", {viewBox: "0 0 " + W + " " + H, "class": "chart"}, box);
    if (!isFinite(xmin)) { el("text", {x: W / 2, y: H / 2, "text-anchor": "middle"}, svg).textContent = "no data"; return; }
    if (xmax === xmin) { xmax = xmin + 1; }
    var pad = (ymax - ymin) * 0.05 || Math.abs(ymax) * 0.05 || 0.5;
    ymin -= pad; ymax += pad;
    function sx(x) { return M.l + (x - xmin) / (xmax - xmin) * (W - M.l - M.r); }
    function sy(y) { return H - M.b - (y - ymin) / (ymax - ymin) * (H - M.t - M.b); }
    var yt = ticks(ymin, ymax, 5), xt = ticks(xmin, xmax, 6);
    yt.forEach(function (t) {
      if (t < ymin || t > ymax) return;
      el("line", {x1: M.l, x2: W - M.r, y1: sy(t), y2: sy(t), stroke: "#eee"}, svg);
      el("text", {x: M.l - 4, y: sy(t) + 3, "text-anchor": "end"}, svg).textContent = tickLabel(t, yt.step);
    });
    xt.forEach(function (t) {
      if (t < xmin || t > xmax) return;
      el("line", {x1: sx(t), x2: sx(t), y1: H - M.b, y2: H - M.b + 4, stroke: "#999"}, svg);
      el("text", {x: sx(t), y: H - M.b + 15, "text-anchor": "middle"}, svg).textContent = tickLabel(t, xt.step);
    });
    el("line", {x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b, stroke: "#999"}, svg);
    el("line", {x1: M.l, x2: M.l, y1: M.t, y2: H - M.b, stroke: "#999"}, svg);
    el("text", {x: W - M.r, y: H - 3, "text-anchor": "end"}, svg).textContent = "step";
    visible.forEach(function (g) {
      var s = data[g], c = color(g);
      if (state.band) {
        var up = path(s.steps, s.hi, sx, sy), down = "";
        for (var i = s.steps.length - 1; i >= 0; i--) {
          if (s.lo[i] === null) continue;
          down += "L" + sx(s.steps[i]).toFixed(1) + "," + sy(s.lo[i]).toFixed(1);
        }
        if (up) el("path", {d: up + down + "Z", fill: c, "fill-opacity": 0.15, stroke: "none"}, svg);
      }
      if (state.runs) (D.runs[p.key][g] || []).forEach(function (r) {
        el("path", {d: path(r.steps, smooth(r.values, win(p.key)), sx, sy), fill: "none", stroke: c,
                    "stroke-width": 0.7, "stroke-opacity": 0.5}, svg);
      });
      el("path", {d: path(s.steps, s.mean, sx, sy), fill: "none", stroke: c, "stroke-width": 1.8}, svg);
      if (s.steps.length <= 12) s.steps.forEach(function (x, i) {
        if (s.mean[i] !== null) el("circle", {cx: sx(x), cy: sy(s.mean[i]), r: 2.5, fill: c}, svg);
      });
    });
    var cursor = el("line", {y1: M.t, y2: H - M.b, stroke: "#888", "stroke-dasharray": "3,3", visibility: "hidden"}, svg);
    var hit = el("rect", {x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b, fill: "transparent"}, svg);
    var tip = box.querySelector(".tip");
    hit.addEventListener("mousemove", function (ev) {
      var r = svg.getBoundingClientRect();
      var x = xmin + ((ev.clientX - r.left) * W / r.width - M.l) / (W - M.l - M.r) * (xmax - xmin);
      var lines = [];
      visible.forEach(function (g) {
        var s = data[g], best = -1;
        for (var i = 0; i < s.steps.length; i++) if (best < 0 || Math.abs(s.steps[i] - x) < Math.abs(s.steps[best] - x)) best = i;
        if (best >= 0) lines.push("<span style='color:" + color(g) + "'>&#9632;</span> " + escapeHtml(g) + ": " +
          fmt(s.mean[best]) + " ± " + fmt((s.hi[best] - s.lo[best]) / 2) + " (step " + s.steps[best] + ", n=" + s.n[best] + ")");
      });
      cursor.setAttribute("x1", sx(Math.max(xmin, Math.min(xmax, x))));
      cursor.setAttribute("x2", sx(Math.max(xmin, Math.min(xmax, x))));
      cursor.setAttribute("visibility", "visible");
      tip.innerHTML = lines.join("<br>");
      tip.style.display = lines.length ? "block" : "none";
      var bx = box.getBoundingClientRect();
      tip.style.left = Math.min(ev.clientX - bx.left + 12, bx.width - tip.offsetWidth - 4) + "px";
      tip.style.top = (ev.clientY - bx.top + 12) + "px";
    });
    hit.addEventListener("mouseleave", function () { tip.style.display = "none"; cursor.setAttribute("visibility", "hidden"); });
  }
  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, function (c) { return "&#" + c.charCodeAt(0) + ";"; });
  }

  var panelsDiv = document.getElementById("panels"), boxes = [];
  D.panels.forEach(function (p) {
    var box = document.createElement("div");
    box.className = "panel";
    box.innerHTML = "<h3>" + escapeHtml(p.title) + "</h3><div class='key'>" + escapeHtml(p.key) + "</div><div class='tip'></div>";
    panelsDiv.appendChild(box);
    boxes.push(box);
  });
  var legend = document.getElementById("legend");
  labels.forEach(function (g) {
    var b = document.createElement("button");
    b.innerHTML = "<span class='sw' style='background:" + color(g) + "'></span>" + escapeHtml(g);
    b.title = "show / hide";
    b.addEventListener("click", function () { state.hidden[g] = !state.hidden[g]; b.className = state.hidden[g] ? "off" : ""; render(); });
    legend.appendChild(b);
  });
  function render() { D.panels.forEach(function (p, i) { drawPanel(boxes[i], p); }); }
  var sm = document.getElementById("smooth");
  sm.value = state.smooth; document.getElementById("smoothv").textContent = state.smooth;
  sm.addEventListener("input", function () { state.smooth = +sm.value; document.getElementById("smoothv").textContent = sm.value; render(); });
  document.getElementById("band").addEventListener("change", function (e) { state.band = e.target.checked; render(); });
  document.getElementById("runs").addEventListener("change", function (e) { state.runs = e.target.checked; render(); });
  render();
  document.documentElement.setAttribute("data-rendered", String(D.panels.length));
})();
"""

"""The inline JavaScript of ``report.html`` (``rlx.report.html``): panels of the picked metrics against
the chosen x-axis (step, samples seen, response tokens, wall-clock; those with data), legend, smoothing,
band, individual seeds, hover, evaluations (``eval/*``) as points with binomial-SE error bars, and a
note on a panel naming the groups that have no data or no signal for it, and why (``D.why``)."""

SCRIPT = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("data").textContent);
  var NS = "http://www.w3.org/2000/svg";
  var W = 440, H = 250, M = {l: 56, r: 12, t: 10, b: 30};
  var labels = D.labels;  // group order = colour order, as in report.png
  var state = {hidden: {}, smooth: D.window || 1, band: true, runs: false, x: "step",
               shown: D.panels.map(function (p) { return p.key; })};
  var XLABEL = {step: "step", samples: "samples seen", tokens: "response tokens", wall: "wall-clock s"};
  (location.hash.slice(1).split("&")).forEach(function (kv) {  // #metrics=a,b&x=wall: a shareable view
    var i = kv.indexOf("="), k = kv.slice(0, i), v = decodeURIComponent(kv.slice(i + 1));
    if (k === "x" && XLABEL[v]) state.x = v;
    if (k === "seeds") state.runs = v === "1";
    if (k === "metrics") state.shown = v.split(",").filter(function (m) { return D.curves[m]; });
  });

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
  function isEval(key) { return key.indexOf("eval/") === 0; }  // sparse evaluations: points, not lines
  function win(key) { return key.indexOf("eval/") === 0 ? 1 : state.smooth; }  // evaluations: never smoothed
  function xOf(g, steps) {  // the x-axis values of a group's steps (null: that group has no such x)
    if (state.x === "step") return steps.slice();
    var m = (D.xmap[state.x] || {})[g] || {};
    return steps.map(function (s) { var v = m[s]; return v === undefined ? null : v; });
  }
  function keepX(xs, arrs) {  // drop the points without an x
    var idx = []; xs.forEach(function (x, i) { if (x !== null) idx.push(i); });
    return arrs.map(function (a) { return idx.map(function (i) { return a[i]; }); });
  }
  function series(key, g) {
    var c = D.curves[key][g], w = win(key);
    var se = c.se || c.steps.map(function () { return null; });
    var k = keepX(xOf(g, c.steps), [xOf(g, c.steps), smooth(c.mean, w), smooth(c.lo, w), smooth(c.hi, w), c.n, c.steps, se]);
    return {steps: k[0], mean: k[1], lo: k[2], hi: k[3], n: k[4], step: k[5], se: k[6]};
  }
  function runXY(g, r, key) {
    var k = keepX(xOf(g, r.steps), [xOf(g, r.steps), smooth(r.values, win(key)), r.se || r.steps.map(function () { return null; })]);
    return {xs: k[0], ys: k[1], se: k[2]};
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
    var missing = labels.filter(function (g) { return !D.curves[p.key][g] || !series(p.key, g).steps.length; });
    var why = (D.why || {})[p.key] || {}, notes = [];
    if (missing.length) notes.push("no data for " + missing.map(function (g) {
      return g + " (" + (why[g] && !D.curves[p.key][g] ? why[g] : "not logged" + (state.x !== "step" ? ", or no " + XLABEL[state.x] : "")) + ")";
    }).join(", "));
    labels.forEach(function (g) { if (why[g] && missing.indexOf(g) < 0) notes.push(g + ": " + why[g]); });
    box.querySelector(".nodata").textContent = notes.join("; ");
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
      extend(s.steps, s.mean.map(function (m, i) { return m === null || s.se[i] === null ? m : m + s.se[i]; }));
      extend(s.steps, s.mean.map(function (m, i) { return m === null || s.se[i] === null ? m : m - s.se[i]; }));
      if (state.band) { extend(s.steps, s.lo); extend(s.steps, s.hi); }
      if (state.runs) (D.runs[p.key][g] || []).forEach(function (r) { var q = runXY(g, r, p.key); extend(q.xs, q.ys); });
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
    el("text", {x: W - M.r, y: H - 3, "text-anchor": "end"}, svg).textContent = XLABEL[state.x];
    visible.forEach(function (g, gi) {
      var s = data[g], c = color(g);
      if (isEval(p.key)) return drawPoints(svg, p.key, g, s, sx, sy, (gi - (visible.length - 1) / 2) * 4);
      if (state.band) {
        var up = path(s.steps, s.hi, sx, sy), down = "";
        for (var i = s.steps.length - 1; i >= 0; i--) {
          if (s.lo[i] === null) continue;
          down += "L" + sx(s.steps[i]).toFixed(1) + "," + sy(s.lo[i]).toFixed(1);
        }
        if (up) el("path", {d: up + down + "Z", fill: c, "fill-opacity": 0.15, stroke: "none"}, svg);
      }
      if (state.runs) (D.runs[p.key][g] || []).forEach(function (r) {
        var q = runXY(g, r, p.key);
        el("path", {d: path(q.xs, q.ys, sx, sy), fill: "none", stroke: c,
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
          fmt(s.mean[best]) + " ± " + fmt((s.hi[best] - s.lo[best]) / 2) + (s.se[best] !== null ? ", SE " + fmt(s.se[best]) : "") +
          " (step " + s.step[best] + ", n=" + s.n[best] + ")");
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
  function errbar(svg, x, y, se, sy, c, w) {  // a vertical bar ± se with caps
    if (se === null || se === undefined) return;
    el("path", {d: "M" + (x - 3) + "," + sy(y - se) + "h6M" + x + "," + sy(y - se) + "V" + sy(y + se) + "M" + (x - 3) + "," +
                sy(y + se) + "h6", stroke: c, "stroke-width": w, fill: "none", "class": "errbar"}, svg);
  }
  function drawPoints(svg, key, g, s, sx, sy, dx) {  // evaluations: mean points ± binomial SE, the seeds' spread
    var c = color(g);
    s.steps.forEach(function (x, i) {
      if (s.mean[i] === null) return;
      var px = sx(x) + dx;
      if (state.band && s.lo[i] !== null && s.hi[i] > s.lo[i]) el("rect", {x: px - 4, width: 8, y: sy(s.hi[i]),
        height: sy(s.lo[i]) - sy(s.hi[i]), fill: c, "fill-opacity": 0.15}, svg);
      errbar(svg, px, s.mean[i], s.se[i], sy, c, 1.3);
      el("circle", {cx: px, cy: sy(s.mean[i]), r: 3.2, fill: c, "class": "evalpt"}, svg);
    });
    if (state.runs) (D.runs[key][g] || []).forEach(function (r) {
      var q = runXY(g, r, key);
      q.xs.forEach(function (x, i) {
        if (q.ys[i] === null) return;
        errbar(svg, sx(x) + dx, q.ys[i], q.se[i], sy, c, 0.6);
        el("circle", {cx: sx(x) + dx, cy: sy(q.ys[i]), r: 2, fill: "#fff", stroke: c, "class": "seedpt"}, svg);
      });
    });
  }
  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, function (c) { return "&#" + c.charCodeAt(0) + ";"; });
  }

  var panelsDiv = document.getElementById("panels"), boxes = [];
  function title(key) { return (D.titles || {})[key] || key; }
  function layout() {  // one panel per picked metric: the default six first, then in the order ticked
    panelsDiv.innerHTML = ""; boxes = [];
    state.shown.forEach(function (key) {
      var box = document.createElement("div");
      box.className = "panel"; box.setAttribute("data-key", key);
      box.innerHTML = "<h3>" + escapeHtml(title(key)) + "</h3><div class='key'>" + escapeHtml(key) +
        "</div><div class='nodata'></div><div class='tip'></div>";
      panelsDiv.appendChild(box);
      boxes.push(box);
    });
    try { history.replaceState(null, "", "#metrics=" + state.shown.map(encodeURIComponent).join(",") + "&x=" + state.x +
                                (state.runs ? "&seeds=1" : "")); }
    catch (e) { /* a file: URL that refuses: the view is just not shareable */ }
  }
  var picker = document.getElementById("picker");
  D.metrics.forEach(function (key) {
    var l = document.createElement("label"), cb = document.createElement("input");
    cb.type = "checkbox"; cb.value = key; cb.checked = state.shown.indexOf(key) >= 0;
    cb.addEventListener("change", function () {
      state.shown = state.shown.filter(function (m) { return m !== key; });
      if (cb.checked) state.shown.push(key);
      render();
    });
    l.appendChild(cb); l.appendChild(document.createTextNode(" " + key)); picker.appendChild(l);
  });
  document.getElementById("nmetrics").textContent = D.metrics.length;
  document.getElementById("filter").addEventListener("input", function (e) {
    var q = e.target.value.toLowerCase();
    Array.prototype.forEach.call(picker.children, function (l) {
      l.style.display = l.textContent.toLowerCase().indexOf(q) >= 0 ? "" : "none";
    });
  });
  var xsel = document.getElementById("xaxis");
  Array.prototype.slice.call(xsel.options).forEach(function (o) {  // offer only the x-axes some group has
    if (o.value !== "step" && !Object.keys((D.xmap || {})[o.value] || {}).length) xsel.removeChild(o);
  });
  if (!xsel.querySelector("option[value='" + state.x + "']")) state.x = "step";
  xsel.value = state.x;
  xsel.addEventListener("change", function () { state.x = xsel.value; render(); });
  var legend = document.getElementById("legend");
  labels.forEach(function (g) {
    var b = document.createElement("button");
    b.innerHTML = "<span class='sw' style='background:" + color(g) + "'></span>" + escapeHtml(g);
    b.title = "show / hide";
    b.addEventListener("click", function () { state.hidden[g] = !state.hidden[g]; b.className = state.hidden[g] ? "off" : ""; render(); });
    legend.appendChild(b);
  });
  function render() {
    layout();
    state.shown.forEach(function (key, i) { drawPanel(boxes[i], {key: key}); });
    document.documentElement.setAttribute("data-rendered", String(state.shown.length));
  }
  var sm = document.getElementById("smooth");
  sm.value = state.smooth; document.getElementById("smoothv").textContent = state.smooth;
  sm.addEventListener("input", function () { state.smooth = +sm.value; document.getElementById("smoothv").textContent = sm.value; render(); });
  document.getElementById("band").addEventListener("change", function (e) { state.band = e.target.checked; render(); });
  document.getElementById("runs").checked = state.runs;
  document.getElementById("runs").addEventListener("change", function (e) { state.runs = e.target.checked; render(); });
  render();
})();
"""

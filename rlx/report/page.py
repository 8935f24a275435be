"""The page of ``report.html`` (``rlx.report.html`` fills in %TITLE%, %NOTES%, %TABLE%, %STATS%,
%FAILED%, %SAMPLES%, %DATA% and %SCRIPT%)."""

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
#metricbox summary { cursor: pointer; } #filter { margin: 4px 0; }
#picker { columns: 4 230px; font-size: 12px; max-height: 240px; overflow: auto; }
#picker label { display: block; white-space: nowrap; }
h3 { font-size: 14px; margin: 16px 0 6px; } .warn { color: #a60; margin: 4px 0; }
table.stats td:nth-child(-n+2) { text-align: left; }
.nodata { color: #a60; font-size: 11px; min-height: 13px; }
table.samples th { text-align: left; } table.samples td { text-align: left; vertical-align: top; max-width: 420px; }
table.samples .c { font-family: ui-monospace, monospace; font-size: 12px; white-space: pre-wrap; margin: 0 0 3px; }
table.samples .r { color: #666; font-family: system-ui, sans-serif; }
</style></head>
<body>
<h1>%TITLE%</h1>
<div class="notes">%NOTES%</div>
<div id="errors"></div>
<div id="controls">
  <label>smoothing <input id="smooth" type="range" min="1" max="50" value="1"> <span id="smoothv">1</span></label>
  <label><input id="band" type="checkbox" checked> ± 1 std band</label>
  <label><input id="runs" type="checkbox"> individual seeds</label>
  <label>x-axis <select id="xaxis"><option value="step">step</option><option value="samples">samples seen</option>
    <option value="tokens">response tokens</option><option value="wall">wall-clock (s)</option></select></label>
</div>
<details id="metricbox"><summary>metrics (<span id="nmetrics"></span> logged): pick the panels</summary>
  <input id="filter" type="search" placeholder="filter"><div id="picker"></div></details>
<div id="legend"></div>
<div id="panels"></div>
<h2>Summary</h2>
%TABLE%
%STATS%
%FAILED%
%SAMPLES%
<script type="application/json" id="data">%DATA%</script>
<script>
%SCRIPT%
</script>
</body></html>
"""


// Vigil console: draws the time-series charts whose data the server put in
// <script type="application/json" id="ID-data"> beside <div data-chart="ID">,
// with uPlot (vendored). No other script, nothing fetched.
(function () {
  "use strict";
  function human(v) {
    if (v == null) return "";
    var units = ["", "k", "M", "G", "T", "P"], i = 0;
    while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return (i ? v.toFixed(1) : String(Math.round(v))) + units[i];
  }
  function draw(el) {
    var src = document.getElementById(el.dataset.chart + "-data");
    if (!src) return;
    var d = JSON.parse(src.textContent);
    if (!d.t.length) {
      el.innerHTML = '<div class="empty">No flows in this range.</div>';
      return;
    }
    var opts = {
      width: Math.max(280, el.clientWidth - 2),
      height: 240,
      series: [
        {},
        { label: "bytes", stroke: "#1c5fb8", fill: "rgba(28,95,184,0.10)", value: function (u, v) { return human(v) + "B"; }, scale: "bytes" },
        { label: "flows", stroke: "#c4320a", value: function (u, v) { return human(v); }, scale: "flows" }
      ],
      axes: [
        {},
        { scale: "bytes", values: function (u, vs) { return vs.map(function (v) { return human(v) + "B"; }); }, size: 72 },
        { scale: "flows", side: 1, grid: { show: false }, values: function (u, vs) { return vs.map(human); }, size: 50 }
      ]
    };
    el.innerHTML = "";
    var plot = new uPlot(opts, [d.t, d.bytes, d.flows], el);
    window.addEventListener("resize", function () {
      plot.setSize({ width: Math.max(280, el.clientWidth - 2), height: 240 });
    });
  }
  document.querySelectorAll("[data-chart]").forEach(draw);
})();

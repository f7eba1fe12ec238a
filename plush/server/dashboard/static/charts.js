// The charts page: series from /api/charts drawn with Plotly (served by this server from the plotly package).
"use strict";
const layout = (extra) => Object.assign({
  margin: { l: 50, r: 10, t: 10, b: 40 }, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
  font: { family: "system-ui, sans-serif", size: 12 }, legend: { orientation: "h", y: -0.2 },
}, extra || {});
const options = { displaylogo: false, responsive: true };
const colours = { stt: "#6c8ebf", llm_first_token: "#b5651d", first_audio: "#2f8f5b", llm: "#d89b5e", tts: "#7fb685", total: "#a79b90" };

async function draw() {
  const hours = document.getElementById("hours").value;
  const response = await fetch("/api/charts?hours=" + hours, { headers: { accept: "application/json" } });
  if (response.status === 401) { window.location.href = "/login"; return; }
  const data = await response.json();
  const x = data.hours.map((ms) => new Date(ms));
  const latency = [];
  for (const [stage, series] of Object.entries(data.latency_ms)) {
    latency.push({ x, y: series.p50, name: stage + " p50", mode: "lines+markers", line: { color: colours[stage] }, connectgaps: false });
    latency.push({ x, y: series.p90, name: stage + " p90", mode: "lines", line: { color: colours[stage], dash: "dot" }, connectgaps: false });
  }
  Plotly.react("latency", latency, layout({ yaxis: { title: { text: "ms" }, rangemode: "tozero" } }), options);
  const bars = Object.entries(data.turns_per_hour).map(([source, counts]) => ({ x, y: counts, name: source, type: "bar" }));
  Plotly.react("per-hour", bars, layout({ barmode: "stack", yaxis: { title: { text: "turns" } } }), options);
  const brains = Object.entries(data.brains);
  Plotly.react("brains", [{ type: "pie", hole: 0.5, labels: brains.map((b) => b[0]), values: brains.map((b) => b[1]) }],
    layout({ annotations: [{ text: data.local_share === null ? "no turns" : Math.round(data.local_share * 100) + "% local",
      showarrow: false, font: { size: 16 } }] }), options);
  const spec = data.speculation;
  Plotly.react("speculation", [
    { x, y: spec.adopted, name: "adopted", type: "bar", marker: { color: "#2f8f5b" } },
    { x, y: spec.wasted, name: "wasted", type: "bar", marker: { color: "#c0392b" } },
    { x, y: spec.gemini_wasted, name: "Gemini requests wasted", mode: "lines+markers", line: { color: "#b5651d" } },
  ], layout({ barmode: "stack", yaxis: { title: { text: "speculations" }, rangemode: "tozero" } }), options);
  document.getElementById("speculation-summary").textContent = spec.started + " started, " + spec.adopted_total +
    " adopted, " + spec.gemini_wasted_total + " Gemini requests wasted" +
    (spec.gemini_wasted_per_turn === null ? "" : " (" + spec.gemini_wasted_per_turn + " per spoken turn)");
  const reasons = Object.entries(data.reasons).map(([r, n]) => r + ": " + n).join(" · ");
  document.getElementById("summary").textContent = data.turns + " turns, " + data.answered + " reached a brain" + (reasons ? " (" + reasons + ")" : "");
}

function drawGemini() {
  const gemini = JSON.parse(document.getElementById("gemini-data").textContent);
  if (!gemini.configured || !gemini.days.length) { document.getElementById("gemini-days").hidden = true; return; }
  const days = gemini.days.map((d) => d.day);
  const traces = [{ x: days, y: gemini.days.map((d) => d.requests), type: "bar", name: "requests per day", marker: { color: "#b5651d" } }];
  if (gemini.requests_per_day) traces.push({ x: days, y: days.map(() => gemini.requests_per_day), mode: "lines", name: "daily budget", line: { dash: "dash", color: "#c0392b" } });
  Plotly.react("gemini-days", traces, layout({ yaxis: { rangemode: "tozero" } }), options);
}

document.getElementById("hours").addEventListener("change", draw);
draw();
drawGemini();
setInterval(draw, 30000);

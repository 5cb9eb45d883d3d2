// Dashboard: the live MJPEG overlay, and /api/status polled twice a second.
"use strict";
const $ = (id) => document.getElementById(id);
const fmt = (v, d = 4) => (v === null || v === undefined ? "-" : Number(v).toPrecision(d));
let updates = 0;
let lastFrame = -1;
const seen = new Set();

function startStream() {
  const img = $("live");
  img.onload = () => { img.dataset.loaded = String(img.naturalWidth); };
  img.onerror = () => { setTimeout(startStream, 2000); };  // server restarting: try again
  img.src = "/stream.mjpg?t=" + Date.now();
}

function drawTrend(trend, threshold) {
  const c = $("trend"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  if (!trend.length) return;
  const top = Math.max(2 * threshold, ...trend.map((t) => t[1])) * 1.05;
  const y = (v) => c.height - (v / top) * c.height;
  const x = (i) => (trend.length === 1 ? c.width / 2 : (i / (trend.length - 1)) * (c.width - 8) + 4);
  g.setLineDash([6, 4]); g.strokeStyle = "#ffd24a"; g.beginPath();
  g.moveTo(0, y(threshold)); g.lineTo(c.width, y(threshold)); g.stroke(); g.setLineDash([]);
  g.strokeStyle = "#6aa9ff"; g.beginPath();
  trend.forEach((t, i) => (i ? g.lineTo(x(i), y(t[1])) : g.moveTo(x(i), y(t[1]))));
  g.stroke();
  trend.forEach((t, i) => { if (t[2]) { g.fillStyle = "#ff4a3d"; g.fillRect(x(i) - 2, y(t[1]) - 2, 4, 4); } });
}

function show(s) {
  $("source").textContent = "source: " + s.source;
  const st = $("source-status"); st.textContent = s.source_status; st.className = "pill " + s.source_status;
  $("threshold").textContent = fmt(s.threshold);
  $("rule").textContent = s.threshold_rule;
  $("method").textContent = s.method + (s.online ? " (online)" : "");
  const c = s.counters;
  $("counts").textContent = c.frames + " / " + c.defects;
  $("dropped").textContent = c.dropped;
  $("reconnects").textContent = c.reconnects;
  $("snapshots").textContent = c.snapshots + " (" + c.snapshot_errors + ")";
  const l = s.latency_ms;
  $("latency").textContent = l.p50 === null ? "-" : `${l.p50} / ${l.p95} / ${l.p99} ms`;
  $("fps").textContent = s.fps === null ? "-" : s.fps + " frames/s";
  if (s.warning) { $("warning").hidden = false; $("warning").textContent = s.warning; }
  const tw = $("threshold-warning");  // unreliable calibration or a drifting stream: what to do, in one line
  tw.hidden = !s.threshold_warning; tw.textContent = s.threshold_warning || "";
  const e = s.latest;
  if (e) {
    const v = $("verdict");
    v.textContent = e.defective ? "DEFECT" : "OK";
    v.className = "verdict " + (e.defective ? "defect" : "ok");
    $("frame-id").textContent = e.frame;
    $("score").textContent = fmt(e.score);
  }
  drawTrend(s.trend, s.threshold);
}

// Every event since the last poll (none is missed between two polls): verdict history, defect list.
function record(events) {
  for (const e of events) {
    lastFrame = Math.max(lastFrame, e.frame);
    updates += 1;
    seen.add(e.defective ? "DEFECT" : "OK");
    if (e.defective) {
      const li = document.createElement("li");
      li.textContent = `frame ${e.frame}: score ${fmt(e.score)} > ${fmt(e.threshold)}` +
        (e.snapshot ? ` (${e.snapshot})` : "");
      const list = $("defects");
      list.prepend(li);
      while (list.children.length > 10) list.lastChild.remove();
    }
  }
  document.body.dataset.updates = String(updates);
  document.body.dataset.verdicts = [...seen].sort().join(",");  // every verdict seen on this page
}

async function poll() {
  try {
    const r = await fetch("/api/status", { cache: "no-store" });
    if (r.ok) show(await r.json());
    const q = lastFrame < 0 ? "limit=1" : `after=${lastFrame}&limit=1000`;
    const ev = await fetch("/api/events?" + q, { cache: "no-store" });
    if (ev.ok) record((await ev.json()).events);
  } catch (err) {
    $("source-status").textContent = "dashboard offline";
  }
  setTimeout(poll, 500);
}

window.addEventListener("load", () => { startStream(); poll(); });

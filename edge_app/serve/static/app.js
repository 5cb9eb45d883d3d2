// Dashboard: the latest overlay and its verdict (one request: the same frame), /api/status and the
// events polled twice a second, and a defect list kept until acknowledged (on the server: /api/acks).
"use strict";
const $ = (id) => document.getElementById(id);
const fmt = (v, d = 4) => (v === null || v === undefined ? "-" : Number(v).toPrecision(d));
let updates = 0;
let lastFrame = -1;
const seen = new Set();

// The picture and the badge come from one /frame.jpg response (its X-Frame-Id / X-Verdict headers),
// so they always show the same frame. (/stream.mjpg stays for other viewers.)
async function pollFrame() {
  try {
    const r = await fetch("/frame.jpg", { cache: "no-store" });
    if (r.ok) {
      const id = r.headers.get("X-Frame-Id"), verdict = r.headers.get("X-Verdict");
      const img = $("live"), url = URL.createObjectURL(await r.blob());
      img.onload = () => {
        img.dataset.loaded = String(img.naturalWidth);
        URL.revokeObjectURL(url);
      };
      img.src = url;
      img.dataset.frame = id;
      const v = $("verdict");
      v.textContent = verdict;
      v.className = "verdict " + (verdict === "DEFECT" ? "defect" : "ok");
      v.dataset.frame = id;
      $("frame-id").textContent = id;
      $("score").textContent = fmt(r.headers.get("X-Score"));
    }
  } catch (err) { /* the status poll reports the dashboard offline */ }
  setTimeout(pollFrame, 250);
}

// Acknowledged defects are kept by the server (POST /api/acks -> OUT/acknowledged.json): every
// browser, a reload and a restart of serve agree. Names are "RUN-FRAME".
const acked = new Set();
let ackCount = -1;
const ackName = (e) => `${e.run}-${e.frame}`;
async function acknowledge(e, li) {
  try {
    const r = await fetch("/api/acks", { method: "POST", headers: { "Content-Type": "application/json" },
                                         body: JSON.stringify({ run: e.run, frame: e.frame }) });
    if (!r.ok) { li.dataset.ackError = String(r.status); return; }
  } catch (err) { li.dataset.ackError = "offline"; return; }
  acked.add(ackName(e));
  li.remove();
  $("defect-count").textContent = String($("defects").children.length);
}

// The server's acknowledgements (and the unacknowledged defects of earlier runs), fetched at load and
// whenever /api/status says their number changed (another operator acknowledged one).
async function loadAcks() {
  const r = await fetch("/api/acks", { cache: "no-store" });
  if (!r.ok) return;
  const a = await r.json();
  for (const n of a.acknowledged) acked.add(n);
  for (const li of [...$("defects").children]) if (acked.has(li.dataset.name)) li.remove();
  for (const e of a.earlier) addDefect(e);
  $("defect-count").textContent = String($("defects").children.length);
  document.body.dataset.acked = String(acked.size);
}

function addDefect(e) {
  const name = ackName(e);
  if (acked.has(name) || document.getElementById("defect-" + name)) return;
  const li = document.createElement("li");
  li.id = "defect-" + name;
  li.dataset.name = name;
  li.className = "defect-item";
  const t = new Date(e.time * 1000).toLocaleTimeString();
  li.append(`${t} frame ${e.frame}: score ${fmt(e.score)} > ${fmt(e.threshold)} `);
  if (e.snapshot) {
    const a = document.createElement("a");
    a.href = "/" + e.snapshot; a.target = "_blank"; a.textContent = "snapshot";
    li.append(a, " ");
  }
  const b = document.createElement("button");
  b.textContent = "acknowledge"; b.onclick = () => acknowledge(e, li);
  li.append(b);
  const list = $("defects");
  list.prepend(li);
  while (list.children.length > 200) list.lastChild.remove();
  $("defect-count").textContent = String(list.children.length);
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
  if (s.mqtt) {  // serve --mqtt: the broker link and the frames waiting on disk for it
    $("broker-row").hidden = false;
    $("broker").textContent = `${s.mqtt.broker} / ${s.mqtt.queue.length} queued (most ${s.mqtt.queue.high_water})`;
  }
  $("snapshots").textContent = c.snapshots + " (" + c.snapshot_errors + ")";
  const l = s.latency_ms;
  $("latency").textContent = l.p50 === null ? "-" : `${l.p50} / ${l.p95} / ${l.p99} ms`;
  $("fps").textContent = s.fps === null ? "-" : s.fps + " frames/s";
  document.body.dataset.run = s.run || "";
  if (s.warning) { $("warning").hidden = false; $("warning").textContent = s.warning; }
  const tw = $("threshold-warning");  // unreliable calibration or a drifting stream: what to do, in one line
  tw.hidden = !s.threshold_warning; tw.textContent = s.threshold_warning || "";
  drawTrend(s.trend, s.threshold);
}

// Every event since the last poll (none is missed between two polls): verdict history, defect list.
function record(events) {
  for (const e of events) {
    lastFrame = Math.max(lastFrame, e.frame);
    updates += 1;
    seen.add(e.defective ? "DEFECT" : "OK");
    if (e.defective) addDefect(e);
  }
  document.body.dataset.updates = String(updates);
  document.body.dataset.verdicts = [...seen].sort().join(",");  // every verdict seen on this page
}

async function poll() {
  try {
    const r = await fetch("/api/status", { cache: "no-store" });
    if (r.ok) {
      const s = await r.json();
      show(s);
      if (s.acknowledged !== ackCount) { ackCount = s.acknowledged; await loadAcks(); }
    }
    // first poll: the newest 1000 events (the unacknowledged defects among them come back after a reload)
    const q = lastFrame < 0 ? "limit=1000" : `after=${lastFrame}&limit=1000`;
    const ev = await fetch("/api/events?" + q, { cache: "no-store" });
    if (ev.ok) record((await ev.json()).events);
  } catch (err) {
    $("source-status").textContent = "dashboard offline";
  }
  setTimeout(poll, 500);
}

window.addEventListener("load", () => { pollFrame(); poll(); });

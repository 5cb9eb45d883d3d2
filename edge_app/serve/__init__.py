"""``edge-foct serve``: the inspection app (capture, inference loop, saved state, dashboard).

sources.py   cameras, video files, RTSP streams, folders; the capture thread and its bounded queue
loop.py      frame -> Inspection -> event log, snapshot, live view; periodic saves of the state
state.py     the episodic memory + threshold window on disk (atomic; corrupt files set aside)
outputs.py   the JSON-lines event log and the snapshots of defective frames
live.py      what the dashboard reads (bounded)
dashboard.py the HTTP server (waitress) and its JSON API; static/ holds the page
demo.py      the built-in demo stream
mqtt_config.py     --mqtt / [mqtt]: broker URL, station id, credentials, TLS
mqtt_publisher.py  events, defects, retained status and last will to the broker (paho-mqtt)
event_queue.py     the on-disk outbox the publisher drains (bounded, atomic, in order)
mqtt_watch.py      the subscriber behind `edge-foct watch` (de-duplicates by run + frame id)
prometheus.py      GET /metrics (prometheus_client)
app.py       wires them together
"""

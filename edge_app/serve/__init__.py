"""``edge-foct serve``: the inspection app (capture, inference loop, saved state, dashboard).

sources.py   cameras, video files, RTSP streams, folders; the capture thread and its bounded queue
loop.py      frame -> Inspection -> event log, snapshot, live view; periodic saves of the state
state.py     the episodic memory + threshold window on disk (atomic; corrupt files set aside)
outputs.py   the JSON-lines event log and the snapshots of defective frames
live.py      what the dashboard reads (bounded)
dashboard.py the HTTP server (waitress) and its JSON API; static/ holds the page
demo.py      the built-in demo stream
app.py       wires them together
"""

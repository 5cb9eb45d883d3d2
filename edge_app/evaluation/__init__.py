"""The evaluation protocol: support draws, the worker pool, metrics, reports, latency."""

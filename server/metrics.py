"""Prometheus metrics, defined once per process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOBS_SUBMITTED = Counter("audiocraft_jobs_submitted_total", "Jobs accepted", ["kind"])
JOBS_FINISHED = Counter("audiocraft_jobs_finished_total", "Jobs that ended", ["kind", "state"])
JOBS_REJECTED = Counter("audiocraft_jobs_rejected_total", "Jobs refused because the queue was full")
QUEUE_DEPTH = Gauge("audiocraft_queue_depth", "Jobs waiting to run")
RUNNING = Gauge("audiocraft_jobs_running", "Jobs in the running batch")
BATCH_SIZE = Histogram("audiocraft_batch_size", "Requests per decode batch", buckets=(1, 2, 3, 4, 6, 8, 12, 16))
GENERATION_SECONDS = Histogram(
    "audiocraft_generation_seconds",
    "Wall time of one decode batch",
    ["model"],
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)
HTTP_REQUESTS = Counter("audiocraft_http_requests_total", "HTTP answers", ["method", "route", "status"])

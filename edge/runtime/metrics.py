"""Counters and latency histograms in Prometheus text format, and a small live status page.

Served over HTTP on a configurable address, loopback by default: ``/metrics``
(Prometheus), ``/status.json`` and ``/`` (a page that refreshes itself).
"""

from __future__ import annotations

import html
import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from edge.errors import DrsnEdgeError
from edge.runtime.decision_log import reject_word

#: The runtime's stages, in the order a unit goes through them.
STAGES = ("decode_assemble", "preprocess", "inference", "decide_write_log")
LATENCY_BUCKETS_MS = (0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 100, 250, 1000)


def latency_percentiles(ms: list[float] | np.ndarray) -> dict:
    """p50/p99/p99.9/max of latencies in milliseconds, as the runtime, benchmarks and calibration report them."""
    a = np.asarray(ms, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    p50, p99, p99_9 = np.percentile(a, (50, 99, 99.9))  # one pass over the data for the three
    return {"n": int(a.size), "p50_ms": float(p50), "p99_ms": float(p99), "p99_9_ms": float(p99_9),
            "max_ms": float(a.max())}


def latency_scope(latency: dict) -> str:
    """Which decisions a :meth:`RuntimeMetrics.latency_summary` covers, in words."""
    window = latency.get("window")
    return f"the last {window:,} decisions" if window else "every decision since the start"


#: Decisions the status page's latency percentiles cover: the latest, once so many were made.
LATENCY_WINDOW = 100_000


class RuntimeMetrics:
    """Everything the runtime counts; one registry per runtime so tests can run several."""

    def __init__(self, bundle_info: dict, counters=None, recent: int = 50, window: int = LATENCY_WINDOW,
                 settings: dict | None = None):
        self.registry = CollectorRegistry()
        r = self.registry
        if counters is not None:
            r.register(_CountersCollector(counters))
        self.decisions = Counter("drsn_decisions", "Decisions made", ["outcome"], registry=r)
        self.fail_safe = Counter("drsn_fail_safe", "Fail-safe decisions", ["reason"], registry=r)
        self.latency = Histogram("drsn_decision_latency_ms", "Last sample arrival to decision written (ms)",
                                 buckets=LATENCY_BUCKETS_MS, registry=r)
        self.stage = Histogram("drsn_stage_ms", "Time per stage (ms)", ["stage"], buckets=LATENCY_BUCKETS_MS,
                               registry=r)
        # The labelled children the hot path uses, looked up once (a ``labels()`` call takes a lock).
        self.stages = {name: self.stage.labels(name) for name in STAGES}
        self.outcomes = {name: self.decisions.labels(name) for name in ("pass", "reject", "fail_safe")}
        self.queue_depth = Gauge("drsn_queue_depth", "Units waiting for inference", registry=r)
        info = Gauge("drsn_bundle_info", "Bundle in use", ["family", "precision", "backend", "sha256"], registry=r)
        info.labels(bundle_info["family"], bundle_info["precision"], bundle_info["backend"],
                    bundle_info["sha256"][:16]).set(1)
        self.bundle_info = bundle_info
        self.settings = settings or {}  # the decision settings in effect, shown beside the bundle
        self.recent: deque[dict] = deque(maxlen=recent)
        # The latest ``window`` latencies in a ring, so that the page copies an array under the lock
        # rather than turning 100,000 Python floats into one, which holds the interpreter from the decider.
        self._latencies = np.zeros(window)
        self._observed = 0  # latencies ever observed; the next goes at this count modulo the window
        self._lock = threading.Lock()

    def observe(self, rows: list[dict], latency_ms: float, timed: bool = True) -> None:
        """The decisions of one unit (one row each for the status page), all written at ``latency_ms``.  Those of
        belt lost in a gap are not ``timed``: no line of theirs arrived, so they have no latency to the budget."""
        with self._lock:
            self.recent.extendleft(rows)
            if not timed:
                return
            self._into_the_window(len(rows), latency_ms)
        for _ in rows:
            self.latency.observe(latency_ms)

    def mark(self, decision_id: int, reject_command: str) -> None:
        """What became of a decision's REJECT after its row was shown (the device's answer, or none)."""
        with self._lock:
            for row in self.recent:
                if row["decision_id"] == decision_id:
                    row["reject_command"] = reject_command
                    return

    def _into_the_window(self, count: int, latency_ms: float) -> None:
        """``count`` decisions at ``latency_ms`` into the ring, over its oldest (under the lock)."""
        window = self._latencies.size
        start, stored = self._observed % window, min(count, window)
        self._latencies[start:start + stored] = latency_ms
        self._latencies[:max(start + stored - window, 0)] = latency_ms  # the part that wraps around
        self._observed += count

    def latency_summary(self) -> dict:
        """Percentiles over the window of latest decisions; ``window`` is its length once full, else None."""
        window = self._latencies.size
        with self._lock:
            latencies = self._latencies[:min(self._observed, window)].copy()
        full = latencies.size == window
        return latency_percentiles(latencies) | {"window": window if full else None}

    def status(self, counters: dict) -> dict:
        with self._lock:
            recent = list(self.recent)
        return {"bundle": self.bundle_info, "settings": self.settings, "latency": self.latency_summary(),
                "counters": counters, "recent": recent}


class _CountersCollector:
    """Exposes the runtime's plain counters (decoder, link, assembler, decisions) at scrape time.

    The hot path only increments integers; nothing Prometheus-specific runs per frame.
    """

    def __init__(self, counters):
        self._counters = counters

    def collect(self):
        family = GaugeMetricFamily("drsn_counter", "Runtime counters (cumulative since start)", labels=["name"])
        for name, value in self._counters().items():
            if isinstance(value, (int, float)):
                family.add_metric([name], float(value))
        yield family


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>drsn-edge</title>
<meta http-equiv="refresh" content="2"><style>body{{font-family:sans-serif;margin:1.5em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}
.reject{{background:#fdd}}</style></head><body>
<h1>drsn-edge runtime</h1>
<p id="bundle">bundle {family} {precision} on {backend}, sha256 {sha}</p>
<p id="settings">{settings}</p>
<h2>Latency (ms, last sample to decision, over {lat_over})</h2>
<table id="latency"><tr>{lat_head}</tr><tr>{lat_row}</tr></table>
<h2>Counters</h2><table id="counters">{counters}</table>
<h2>Latest decisions</h2><table id="decisions"><tr><th>id</th><th>span</th><th>lane</th><th>class</th>
<th>reject</th><th>latency ms</th></tr>{rows}</table></body></html>"""


def render_page(status: dict) -> str:
    b = status["bundle"]
    lat = status["latency"]
    keys = [k for k in ("n", "p50_ms", "p99_ms", "p99_9_ms", "max_ms") if k in lat]
    rows = "".join(
        f"<tr class=\"{'reject' if d['reject'] else ''}\"><td>{d['decision_id']}</td><td>{d['span']}</td>"
        f"<td>{d['lane']}</td><td>{html.escape(d['class'])}</td>"
        f"<td>{reject_word(d['reject'], d.get('reject_command'))}</td>"
        f"<td>{d['latency_ms']:.2f}</td></tr>" for d in status["recent"])
    counters = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in status["counters"].items())
    settings = ", ".join(f"{html.escape(str(k)).replace('_', ' ')} {html.escape(str(v))}"
                         for k, v in status.get("settings", {}).items())
    return PAGE.format(settings=settings, family=html.escape(b["family"]), precision=html.escape(b["precision"]),
                       backend=html.escape(b["backend"]), sha=html.escape(b["sha256"][:16]),
                       lat_over=latency_scope(lat), lat_head="".join(f"<th>{k}</th>" for k in keys),
                       lat_row="".join(f"<td>{lat[k]:.3f}</td>" if k != "n" else f"<td>{lat[k]}</td>" for k in keys),
                       counters=counters, rows=rows)


class StatusServerError(DrsnEdgeError):
    """The status page cannot listen where it was asked to."""


def listen_address(value: str) -> tuple[str, int]:
    """``HOST:PORT``, or ``:PORT`` for loopback, as (host, port); port 0 takes any free one."""
    host, _, port = value.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{value!r}: give HOST:PORT (e.g. 127.0.0.1:9108), :PORT, or off")
    return host or "127.0.0.1", int(port)


#: Seconds a client may take to send its request or read the answer.  A tablet that leaves the plant's
#: Wi-Fi mid-request never closes its connection; each such connection would hold a thread and a file
#: descriptor of the runtime for good, and enough of them would leave none for reopening the port.
CLIENT_TIMEOUT_S = 10.0


class StatusServer:
    """HTTP on ``host:port`` (port 0: any free port) serving /metrics, /status.json and /."""

    def __init__(self, metrics: RuntimeMetrics, counters, host: str = "127.0.0.1", port: int = 9108,
                 client_timeout_s: float = CLIENT_TIMEOUT_S):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            timeout = client_timeout_s  # then the connection is closed

            def do_GET(self):  # noqa: N802 - the http.server API
                if self.path == "/metrics":
                    body, kind = generate_latest(metrics.registry), CONTENT_TYPE_LATEST
                elif self.path == "/status.json":
                    body, kind = json.dumps(metrics.status(counters())).encode(), "application/json"
                elif self.path in ("/", "/index.html"):
                    body, kind = render_page(metrics.status(counters())).encode(), "text/html; charset=utf-8"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # quiet: the runtime logs what matters
                pass

        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise StatusServerError(f"status page: cannot listen on {host}:{port} ({exc.strerror or exc}); another "
                                    "runtime may be serving there: give --http another HOST:PORT, or off") from exc
        self.address = f"http://{self.server.server_address[0]}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="status-http", daemon=True)
        self._thread.start()
        self.owner = owner

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

"""Where a Python-backend model's time goes, as Triton custom metrics on the server's /metrics endpoint.

Triton's statistics say how long an execution took; these say what it did meanwhile: per phase (reading the
requests, tokenizing, host-to-device copy, GPU, device-to-host copy, writing the responses) seconds and counts, as
two counter families labelled by model and phase / item:

    enc2triton_seconds_total{model="torch_fp16", phase="gpu"}
    enc2triton_items_total{model="torch_fp16", item="texts"}

Every update is an IPC message from the stub to the server, so they are summed here and sent at most every
FLUSH_SECONDS (and at finalize): a reader that diffs two scrapes taken a level apart is off by at most that much at
each end. Without the Python backend (unit tests) they are only summed. Copied into each model folder as
enc2triton_stage_metrics.py.
"""
import os
import time

try:
    import triton_python_backend_utils as pb_utils
except ImportError:
    pb_utils = None

FLUSH_SECONDS = float(os.environ.get("ENC2TRITON_METRICS_FLUSH_S", "0.5"))  # 0: every execution (tests)
SECONDS = "enc2triton_seconds_total"
ITEMS = "enc2triton_items_total"


class StageMetrics:
    def __init__(self, model: str):
        self.model = model
        self.seconds: dict[str, float] = {}
        self.items: dict[str, float] = {}
        self._metrics: dict[tuple[str, str], object] = {}
        self._last = time.monotonic()
        self._families = None
        if pb_utils is not None and hasattr(pb_utils, "MetricFamily"):
            try:
                self._families = {
                    SECONDS: pb_utils.MetricFamily(name=SECONDS, description="seconds a Python-backend model spent per phase",
                                                   kind=pb_utils.MetricFamily.COUNTER),
                    ITEMS: pb_utils.MetricFamily(name=ITEMS, description="things a Python-backend model handled",
                                                 kind=pb_utils.MetricFamily.COUNTER)}
            except Exception as e:  # metrics are a measurement aid: never a reason not to serve
                print(f"[{model}] custom metrics unavailable: {e}", flush=True)

    def time(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def count(self, item: str, n: float = 1) -> None:
        self.items[item] = self.items.get(item, 0.0) + n

    def tick(self) -> None:
        """Send what was summed when FLUSH_SECONDS have passed (call once per execution)."""
        if time.monotonic() - self._last >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        if self._families is None:
            return
        for family, label, values in ((SECONDS, "phase", self.seconds), (ITEMS, "item", self.items)):
            for key, v in values.items():
                if not v:
                    continue
                metric = self._metrics.get((family, key))
                if metric is None:
                    try:
                        metric = self._families[family].Metric(labels={"model": self.model, label: key})
                    except Exception:
                        return
                    self._metrics[(family, key)] = metric
                try:
                    metric.increment(v)
                except Exception:  # the server is going away (finalize after a kill): nothing left to tell
                    return
                values[key] = 0.0

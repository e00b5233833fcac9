"""Prometheus metrics: every family Sentinel exports, in one registry per process.

Label names are fixed (series metrics always carry `rule`, `type` and `channel`, with `__all__` where a
rule does not group by that field) so dashboards never break when a rule changes. Label values that
come from data are capped per rule: past the cap they fold into `__other__`, and the folding is itself
counted, so one runaway type column cannot blow up Prometheus. No secret is ever a label value.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

from sentinel import __version__
from sentinel.model import OTHER

log = logging.getLogger("sentinel.metrics")

disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series beside each counter

ALL = "__all__"
DEFAULT_LABEL_CAP = 1000

DELAY_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
COMMIT_DELAY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
POLL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class LabelCap:
    """Admits at most `cap` distinct label tuples per scope (a rule); the rest become `__other__`."""

    def __init__(self, cap: int = DEFAULT_LABEL_CAP) -> None:
        self.cap = cap
        self._seen: dict[str, set[tuple[str, ...]]] = {}
        self._lock = threading.Lock()

    def admit(self, scope: str, values: tuple[str, ...]) -> tuple[tuple[str, ...], bool]:
        """The label values to use, and whether they were folded."""
        with self._lock:
            seen = self._seen.setdefault(scope, set())
            if values in seen:
                return values, False
            if len(seen) < self.cap:
                seen.add(values)
                return values, False
        return tuple(OTHER if v != ALL else v for v in values), True


class Metrics:
    """All of Sentinel's metric families, registered in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None, label_cap: int = DEFAULT_LABEL_CAP) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.cap = LabelCap(label_cap)
        series = ["rule", "type", "channel"]
        self.records_ingested = Counter(
            "sentinel_records_ingested", "Complaints accepted from the source.", ["type", "channel"], registry=r
        )
        self.records_rejected = Counter(
            "sentinel_records_rejected", "Records refused by validation, by reason.", ["reason"], registry=r
        )
        self.records_late = Counter(
            "sentinel_records_late",
            "Records that arrived after their time had been closed (older than "
            "lateness); counted into their day, never alerting for it.",
            registry=r,
        )
        self.records_reconciled = Counter(
            "sentinel_records_reconciled",
            "Rows found by reconciliation that the watermark reads had missed (counted as late records, or rejected).",
            registry=r,
        )
        self.series_current = Gauge(
            "sentinel_series_current",
            "Current value of a threshold series (today so far, or last 24 h).",
            series,
            registry=r,
        )
        self.series_baseline = Gauge(
            "sentinel_series_baseline", "Baseline the current value is compared with.", series, registry=r
        )
        self.series_threshold = Gauge(
            "sentinel_series_threshold",
            "Count at which the series fires now (factor x baseline, min_count, max_p).",
            series,
            registry=r,
        )
        self.series_ratio = Gauge("sentinel_series_ratio", "Current value divided by the baseline.", series, registry=r)
        self.series_folded = Counter(
            "sentinel_series_folded",
            "Series folded into __other__ by a rule's max_series or the label cap.",
            ["rule"],
            registry=r,
        )
        self.streak_length = Gauge(
            "sentinel_streak_length", "Length of the current run of a streak rule.", series, registry=r
        )
        self.alerts_firing = Gauge(
            "sentinel_alerts_firing", "Open alerts by rule and tier.", ["rule", "tier"], registry=r
        )
        self.alert_events = Counter(
            "sentinel_alert_events", "Alert events (firing, upgraded, resolved).", ["rule", "tier", "state"], registry=r
        )
        self.alert_retractions = Counter(
            "sentinel_alert_retractions",
            "Escalations told on sight that the settled order (after lateness) did not confirm: a firing "
            "retracted, or an upgrade kept although the settled run stays lower.",
            ["rule", "what"],
            registry=r,
        )
        self.notifications = Counter(
            "sentinel_notifications",
            "Messages by final outcome (delivered, failed, dropped_dry_run).",
            ["receiver", "outcome"],
            registry=r,
        )
        self.notification_requests = Counter(
            "sentinel_notification_requests", "HTTP attempts to deliver a message.", ["receiver"], registry=r
        )
        self.notification_requests_failed = Counter(
            "sentinel_notification_requests_failed",
            "Failed delivery attempts, by reason.",
            ["receiver", "reason"],
            registry=r,
        )
        self.outbox_pending = Gauge(
            "sentinel_outbox_pending", "Messages waiting for delivery.", ["receiver"], registry=r
        )
        self.receiver_state = Gauge(
            "sentinel_receiver_state",
            "1 for the receiver's current delivery state, 0 for the others: ok, "
            "retrying, failing (3 failed attempts in a row, or its oldest pending "
            "message 5 min old while attempts fail), set_aside (the last message "
            "was refused for good).",
            ["receiver", "state"],
            registry=r,
        )
        self.receiver_consecutive_failures = Gauge(
            "sentinel_receiver_consecutive_failures",
            "Failed delivery attempts since the receiver's last delivered message.",
            ["receiver"],
            registry=r,
        )
        self.receiver_oldest_pending = Gauge(
            "sentinel_receiver_oldest_pending_seconds",
            "Age of the receiver's oldest message not yet delivered (0: none).",
            ["receiver"],
            registry=r,
        )
        self.notification_delay = Histogram(
            "sentinel_notification_delay_seconds",
            "Time from the alert event to the message's delivery.",
            ["receiver"],
            buckets=DELAY_BUCKETS,
            registry=r,
        )
        self.poll_duration = Histogram(
            "sentinel_poll_duration_seconds", "Duration of one poll + evaluate cycle.", buckets=POLL_BUCKETS, registry=r
        )
        self.source_up = Gauge("sentinel_source_up", "1 when the last poll of the source succeeded.", registry=r)
        self.source_lag = Gauge(
            "sentinel_source_lag_seconds", "Now minus the creation time of the newest record read.", registry=r
        )
        self.source_commit_delay = Histogram(
            "sentinel_source_commit_delay_seconds",
            "Time from a record's created_at to the poll that first read it "
            "(its commit delay; compare with [source] lateness).",
            buckets=COMMIT_DELAY_BUCKETS,
            registry=r,
        )
        self.source_errors = Counter("sentinel_source_errors", "Failed polls of the source.", registry=r)
        self.source_listen_up = Gauge(
            "sentinel_source_listen_up",
            "1 while the LISTEN connection of a PostgreSQL source is up (0: new rows "
            "wait for poll_interval, or LISTEN/NOTIFY is not in use).",
            registry=r,
        )
        self.leader = Gauge(
            "sentinel_leader", "1 when this instance leads (polls, detects, sends); 0 on a standby.", registry=r
        )
        self.leader_epoch = Gauge(
            "sentinel_leader_epoch",
            "The leader lease's epoch in the state store (PostgreSQL; +1 at every takeover).",
            registry=r,
        )
        self.leader_lease_age = Gauge(
            "sentinel_leader_lease_age_seconds",
            "Seconds since the leader last renewed its lease (the store's clock).",
            registry=r,
        )
        self.leadership_changes = Counter(
            "sentinel_leadership_changes",
            "Times this instance took the lead (acquired) or lost it (lost).",
            ["change"],
            registry=r,
        )
        self.store_lock_held = Gauge(
            "sentinel_store_lock_held",
            "1 while this daemon holds the state store's one-daemon lock (0: lost, detection and delivery hold).",
            registry=r,
        )
        self.store_lock_losses = Counter(
            "sentinel_store_lock_losses",
            "Times the state store's lock was lost while running (PostgreSQL).",
            registry=r,
        )
        self.config_reload_ok = Gauge(
            "sentinel_config_last_reload_successful", "1 when the last configuration (re)load succeeded.", registry=r
        )
        self.config_reload_time = Gauge(
            "sentinel_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully.",
            registry=r,
        )
        self.build_info = Gauge("sentinel_build_info", "Build information; always 1.", ["version"], registry=r)
        self.build_info.labels(version=__version__).set(1)
        self.config_reload_ok.set(1)
        self.collect_hooks: dict[str, Callable[[], None]] = {}
        """Run before each render, to set gauges that change with time alone (a pending message's age)."""

    def series_labels(self, rule: str, labels: Mapping[str, str]) -> tuple[str, str, str]:
        """Fixed (rule, type, channel) label values for a series, capped per rule."""
        values = (labels.get("type", ALL), labels.get("channel", ALL))
        capped, folded = self.cap.admit(rule, values)
        if folded:
            self.series_folded.labels(rule=rule).inc()
        return rule, capped[0], capped[1]

    def ingest_labels(self, type_: str, channel: str) -> tuple[str, str]:
        capped, _ = self.cap.admit("__ingest__", (type_, channel))
        return capped[0], capped[1]

    def clear_leader_gauges(self) -> None:
        """A standby exports no series or alert gauges: they are the leader's (two instances showing the
        same series would count it twice on a dashboard summing over instances)."""
        for family in (
            self.series_current,
            self.series_baseline,
            self.series_threshold,
            self.series_ratio,
            self.streak_length,
            self.alerts_firing,
        ):
            family.clear()

    def render(self) -> bytes:
        for name, hook in list(self.collect_hooks.items()):
            try:
                hook()
            except Exception as exc:  # noqa: BLE001 - the store is down: the rest goes out, these keep their values
                log.warning(
                    "could not refresh metrics before the scrape",
                    extra={"fields": {"gauges": name, "error": type(exc).__name__}},
                )
        return generate_latest(self.registry)

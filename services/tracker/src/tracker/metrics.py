"""Prometheus metrics of the tracker (served by ``/metrics``)."""

from prometheus_client import Counter, Histogram

from .recent import WriteStatus

CLICKS = Counter("tracker_clicks_total", "Referral clicks recorded", ["via"])
BOT_VISITS = Counter("tracker_bot_visits_total", "Referral-link visits by known crawlers")
UNKNOWN_CODES = Counter("tracker_unknown_code_visits_total",
                        "Referral-link visits for unknown or inactive codes")
LOST_CLICKS = Counter("tracker_clicks_lost_total",
                      "Visitors redirected although their click could not be recorded")
CONVERSIONS = Counter("tracker_conversions_total", "Conversions received", ["status"])
REVERSALS = Counter("tracker_reversals_total", "Reversals received", ["status"])
# Labelled once: ``labels()`` costs a few µs, paid on every request otherwise.
CONVERSIONS_BY_STATUS = {status: CONVERSIONS.labels(status=status.value) for status in WriteStatus}
REVERSALS_BY_STATUS = {status: REVERSALS.labels(status=status.value) for status in WriteStatus}
PUBLISH_FAILURES = Counter("tracker_publish_failures_total",
                           "Events the broker did not acknowledge in time", ["topic"])
PUBLISH_SECONDS = Histogram(
    "tracker_publish_seconds", "Time from send to the broker's acknowledgement",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REPEAT_CLICKS = Counter("tracker_clicks_deduplicated_total",
                        "Repeat clicks of one code by one visitor within the dedupe window "
                        "(answered with the first click's id, not published)", ["via"])
BATCH_EVENTS = Counter("tracker_batch_events_total", "Events received in batches, by outcome",
                       ["status"])
RATE_LIMITED = Counter("tracker_rate_limited_total", "Requests refused with 429", ["key_kind"])
OVERSIZED_BODIES = Counter("tracker_oversized_bodies_total",
                           "Requests refused with 413 (body over the limit)")
PRODUCE_RETRIES = Counter("tracker_produce_retries_total",
                          "Record batches sent again after a retriable broker error "
                          "(leader moved, connection lost)", ["topic"])

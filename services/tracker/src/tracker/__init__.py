"""Referral tracker: link redirects, clicks, conversions and reversals into Kafka.

Wiring lives in :mod:`tracker.app` (``create_app``) and :mod:`tracker.runtime`; pure rules
in :mod:`tracker.links`, :mod:`tracker.codes` and :mod:`tracker.keys`.
"""

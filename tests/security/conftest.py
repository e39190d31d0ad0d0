"""The security tests reuse the service fixtures of the tracker, notifier and rewards tests."""

from tests.notifier.conftest import notifier, notifier_settings
from tests.rewards.conftest import rewards_settings
from tests.tracker.conftest import programme, tracker_settings, tracker_url, web

__all__ = ["notifier", "notifier_settings", "programme", "rewards_settings", "tracker_settings",
           "tracker_url", "web"]

"""The poison tests reuse the service fixtures of the notifier and rewards tests."""

from tests.notifier.conftest import notifier, notifier_settings
from tests.rewards.conftest import rewards_settings

__all__ = ["notifier", "notifier_settings", "rewards_settings"]

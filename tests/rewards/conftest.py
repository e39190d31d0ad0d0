from __future__ import annotations

import pytest
from rewards.config import RewardsSettings


@pytest.fixture
def rewards_settings(platform_env) -> RewardsSettings:
    return RewardsSettings(**platform_env, scheduler_interval_seconds=0.2,
                           relay_interval_seconds=0.2)

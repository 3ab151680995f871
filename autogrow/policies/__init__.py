"""The pure growth policy: Algorithm 1 as a state machine over events. Imports no torch."""

from autogrow.policies.machine import (
    TRANSITIONS,
    GrowthState,
    Phase,
    PolicyError,
    apply,
    base_state,
    decide,
    due,
    fold,
    init_seed,
    metric_series,
)
from autogrow.policies.schedule import learning_rate, staircase
from autogrow.policies.settings import METRICS, POLICIES, PolicyConfigError, PolicySettings

__all__ = [
    "METRICS", "POLICIES", "TRANSITIONS", "GrowthState", "Phase", "PolicyConfigError",
    "PolicyError", "PolicySettings", "apply", "base_state", "decide", "due", "fold", "init_seed", "learning_rate",
    "metric_series", "staircase",
]

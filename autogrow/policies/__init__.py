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
from autogrow.policies.schedule import parse_milestones, staircase
from autogrow.policies.settings import GROWTH_LRS, METRICS, POLICIES, PolicyConfigError, PolicySettings

__all__ = [
    "GROWTH_LRS", "METRICS", "POLICIES", "TRANSITIONS", "GrowthState", "Phase", "PolicyConfigError",
    "PolicyError", "PolicySettings", "apply", "base_state", "decide", "due", "fold", "init_seed",
    "metric_series", "parse_milestones", "staircase",
]

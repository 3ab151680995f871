"""autogrow: discover the depth of a convolutional network by growing it while it trains.

The public API is loaded lazily so that ``import autogrow.policies`` stays free of torch:

- ``autogrow.build_net(family, arch, ...)`` and ``autogrow.load_model(path)`` (networks),
- ``autogrow.grow(config, run_dir=None) -> RunResult`` (a whole AutoGrow run),
- ``autogrow.RunConfig`` / ``autogrow.resolve_config(preset, file, overrides)`` (settings).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "build_net": "autogrow.blocks",
    "load_model": "autogrow.blocks",
    "GrowableNet": "autogrow.blocks",
    "grow": "autogrow.engine.lifecycle",
    "resume": ("autogrow.engine.lifecycle", "resume_run"),
    "RunResult": "autogrow.engine.run",
    "RunConfig": "autogrow.config",
    "resolve_config": "autogrow.config",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'autogrow' has no attribute {name!r}")
    module, attr = target if isinstance(target, tuple) else (target, name)
    return getattr(importlib.import_module(module), attr)

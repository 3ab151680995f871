"""Arch strings: "2-3-2" means 2 blocks in stage 0, 3 in stage 1, 2 in stage 2.

Pure Python (no torch) so that config validation and the policy state machine can use it.
"""

from __future__ import annotations

Arch = tuple[int, ...]


def parse_arch(text: str, stages: int | None = None) -> Arch:
    """Parse an arch string; `stages` (when given) is the stage count the family needs."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"arch string is empty; expected blocks per stage such as '1-1-1'")
    parts = text.strip().split("-")
    try:
        depths = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(
            f"malformed arch string {text!r}: expected positive integers joined by '-', such as '1-2-1'"
        ) from None
    if any(not p.strip().isdigit() for p in parts):
        raise ValueError(
            f"malformed arch string {text!r}: expected positive integers joined by '-', such as '1-2-1'"
        )
    if any(d < 1 for d in depths):
        raise ValueError(f"malformed arch string {text!r}: every stage needs at least 1 block")
    if stages is not None and len(depths) != stages:
        raise ValueError(
            f"arch string {text!r} has {len(depths)} stages but this family has {stages}"
        )
    return depths


def format_arch(depths: Arch) -> str:
    """The arch string of a tuple of stage depths."""
    return "-".join(str(int(d)) for d in depths)

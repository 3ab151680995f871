"""Arch strings: "2-3-2" means 2 blocks in stage 0, 3 in stage 1, 2 in stage 2.

Pure Python (no torch) so that config validation and the policy state machine can use it.
"""

from __future__ import annotations

from autogrow.errors import InputError

Arch = tuple[int, ...]


def parse_arch(text: str, stages: int | None = None) -> Arch:
    """Parse an arch string; `stages` (when given) is the stage count the family needs."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("arch string is empty; expected blocks per stage such as '1-1-1'")
    parts = text.strip().split("-")
    try:
        depths = tuple(int(p) for p in parts)
    except ValueError:
        raise InputError(
            f"malformed arch string {text!r}: expected positive integers joined by '-', such as '1-2-1'"
        ) from None
    if any(not p.strip().isdigit() for p in parts):
        raise InputError(
            f"malformed arch string {text!r}: expected positive integers joined by '-', such as '1-2-1'"
        )
    if any(d < 1 for d in depths):
        raise InputError(f"malformed arch string {text!r}: every stage needs at least 1 block")
    if stages is not None and len(depths) != stages:
        raise InputError(
            f"arch string {text!r} has {len(depths)} stages but this family has {stages}"
        )
    return depths


def format_arch(depths: Arch) -> str:
    """The arch string of a tuple of stage depths."""
    return "-".join(str(int(d)) for d in depths)


#: Conv layers per block of each block type (shortcut/projection convs are not counted).
CONVS_PER_BLOCK = {"plain": 1, "basic": 2, "bottleneck": 3}

#: Layers outside the stages: the stem conv and the linear head, as in the names ResNet-20/56/50.
FIXED_LAYERS = 2

#: The family of a run whose logged config names none (RunConfig's default).
DEFAULT_FAMILY = "basic3resnet"


def convs_per_block(family: str) -> int:
    """Conv layers in one block of ``family``: 1 (plain), 2 (basic residual), 3 (bottleneck)."""
    name = str(family).lower()
    for prefix, convs in sorted(CONVS_PER_BLOCK.items(), key=lambda kv: -len(kv[0])):
        if name.startswith(prefix):
            return convs
    raise InputError(
        f"unknown network family {family!r}: cannot count its layers; "
        f"expected a name starting with one of {', '.join(CONVS_PER_BLOCK)}"
    )


def layer_count(family: str, arch: str | Arch) -> int:
    """Depth of a net in weighted layers, counted the way ResNet names are.

    ``convs per block × blocks + 2``: the stem conv and the linear head count, shortcut convs do
    not. So basic3resnet 3-3-3 is ResNet-20, 9-9-9 is ResNet-56, 42-42-42 has 254 layers (the
    paper's Figure 2); bottleneck4resnet 3-4-6-3 is ResNet-50; plain3net 1-1-1 has 5 layers.
    """
    depths = parse_arch(arch) if isinstance(arch, str) else tuple(int(d) for d in arch)
    return convs_per_block(family) * sum(depths) + FIXED_LAYERS

"""torch.nn side of AutoGrow: blocks, GrowableNet, family/initializer registries, counts, export.

Public API:
    build_net(family, arch, *, in_channels=3, num_classes=10, image_size=32, width=1.0,
              weight_init="torch", generator=None) -> GrowableNet
    GrowableNet.grow(stage, initializer="gau", generator=None) -> list[str]
    adam_init(net, new_param_names, batches, *, max_epochs=10, target_train_acc=None,
              lr=1e-3, weight_decay=0.0, device=None, amp_dtype=None) -> dict
    count_params(net) -> int;  count_flops(net, image_size=None) -> int;  arch_cost(...) -> dict
    load_model(path, *, device="cpu") -> GrowableNet;  save_model(net, path)
    weights_digest(module_or_state_dict) -> str
    FAMILIES, INITIALIZERS: tuples of valid names; WEIGHT_INITS: base inits by name.
"""

from .adam_init import adam_init
from .counting import arch_cost, count_flops, count_params
from .digest import weights_digest
from .export import FORMAT, load_model, save_model
from .families import FAMILIES, IMAGENET_STEM_MIN_SIZE, FamilySpec, get_family
from .initializers import INITIALIZERS, WEIGHT_INITS, canonical_initializer, default_init_
from .layers import BasicBlock, Block, Bottleneck, PlainBlock, Stem
from .net import GrowableNet, build_net

__all__ = [
    "FAMILIES",
    "FORMAT",
    "IMAGENET_STEM_MIN_SIZE",
    "INITIALIZERS",
    "WEIGHT_INITS",
    "BasicBlock",
    "Block",
    "Bottleneck",
    "FamilySpec",
    "GrowableNet",
    "PlainBlock",
    "Stem",
    "adam_init",
    "arch_cost",
    "build_net",
    "canonical_initializer",
    "count_flops",
    "count_params",
    "default_init_",
    "get_family",
    "load_model",
    "save_model",
    "weights_digest",
]

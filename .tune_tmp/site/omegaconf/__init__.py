from .base import Container, DictKeyType, Node, SCMode, UnionNode
from .dictconfig import DictConfig
from .errors import (
    KeyValidationError,
    MissingMandatoryValue,
    ReadonlyConfigError,
    UnsupportedValueType,
    ValidationError,
)
from .listconfig import ListConfig
from .nodes import (
    AnyNode,
    BooleanNode,
    BytesNode,
    EnumNode,
    FloatNode,
    IntegerNode,
    PathNode,
    StringNode,
    ValueNode,
)
from .omegaconf import (
    II,
    MISSING,
    SI,
    OmegaConf,
    Resolver,
    flag_override,
    open_dict,
    read_write,
)
from .version import __version__

__all__ = [
    "__version__",
    "MissingMandatoryValue",
    "ValidationError",
    "ReadonlyConfigError",
    "UnsupportedValueType",
    "KeyValidationError",
    "Container",
    "UnionNode",
    "ListConfig",
    "DictConfig",
    "DictKeyType",
    "OmegaConf",
    "Resolver",
    "SCMode",
    "flag_override",
    "read_write",
    "open_dict",
    "Node",
    "ValueNode",
    "AnyNode",
    "IntegerNode",
    "StringNode",
    "BytesNode",
    "PathNode",
    "BooleanNode",
    "EnumNode",
    "FloatNode",
    "MISSING",
    "SI",
    "II",
]

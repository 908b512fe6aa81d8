from collections.abc import Callable
from typing import Any, TypeVar

from zope.interface.interface import InterfaceClass

_C = TypeVar("_C", bound=type[Any])

def implementer(*interfaces: InterfaceClass) -> Callable[[_C], _C]: ...

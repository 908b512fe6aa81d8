from typing import Any

truthy: frozenset[str]
falsey: frozenset[str]

def asbool(s: object) -> bool: ...
def aslist(value: Any, flatten: bool = True) -> list[str]: ...

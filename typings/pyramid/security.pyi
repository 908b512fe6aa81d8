from collections.abc import Sequence
from typing import Any

NO_PERMISSION_REQUIRED: str

def forget(request: Any, **kw: Any) -> list[tuple[str, str]]: ...

# True or false as an int, with the reason in ``msg``.
class PermitsResult(int):
    def __new__(cls, s: str, *args: Any) -> PermitsResult: ...
    @property
    def msg(self) -> str: ...

class Denied(PermitsResult): ...
class Allowed(PermitsResult): ...

class ACLPermitsResult(PermitsResult):
    def __new__(
        cls, ace: Any, acl: Any, permission: str, principals: Sequence[str], context: Any
    ) -> ACLPermitsResult: ...
    permission: str
    ace: Any
    acl: Any
    principals: Sequence[str]
    context: Any

class ACLDenied(ACLPermitsResult, Denied): ...
class ACLAllowed(ACLPermitsResult, Allowed): ...

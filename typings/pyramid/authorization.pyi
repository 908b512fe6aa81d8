from collections.abc import Iterator, Sequence
from typing import Any

from pyramid.security import ACLAllowed as _ACLAllowed
from pyramid.security import ACLDenied as _ACLDenied

Everyone: str
Authenticated: str
Allow: str
Deny: str

class AllPermissionsList:
    def __contains__(self, other: object) -> bool: ...
    def __iter__(self) -> Iterator[Any]: ...

ALL_PERMISSIONS: AllPermissionsList

class ACLAllowed(_ACLAllowed): ...
class ACLDenied(_ACLDenied): ...

class ACLHelper:
    def permits(
        self, context: Any, principals: Sequence[str], permission: str
    ) -> ACLAllowed | ACLDenied: ...
    def principals_allowed_by_permission(self, context: Any, permission: str) -> set[str]: ...

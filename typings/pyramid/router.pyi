from collections.abc import Callable, Iterable
from typing import Any

from pyramid.registry import Registry

class Router:
    registry: Registry
    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]: ...

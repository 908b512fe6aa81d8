from collections.abc import Callable, Mapping
from types import ModuleType, TracebackType
from typing import Any

from pyramid.registry import Registry
from pyramid.router import Router

class Configurator:
    registry: Registry
    def __init__(
        self,
        registry: Registry | None = None,
        package: ModuleType | str | None = None,
        settings: Mapping[str, Any] | None = None,
        root_factory: Any = None,
        security_policy: Any = None,
        authentication_policy: Any = None,
        authorization_policy: Any = None,
        renderers: Any = None,
        debug_logger: Any = None,
        locale_negotiator: Any = None,
        request_factory: Any = None,
        response_factory: Any = None,
        default_permission: str | None = None,
        session_factory: Any = None,
        default_view_mapper: Any = None,
        autocommit: bool = False,
        exceptionresponse_view: Any = ...,
        route_prefix: str | None = None,
        introspection: bool = True,
        root_package: ModuleType | str | None = None,
    ) -> None: ...
    def __enter__(self) -> Configurator: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    def include(
        self,
        callable: str | ModuleType | Callable[[Configurator], object],
        route_prefix: str | None = None,
    ) -> None: ...
    def scan(
        self,
        package: str | ModuleType | None = None,
        categories: Any = ...,
        onerror: Callable[[str], object] | None = None,
        ignore: Any = None,
        **kw: Any,
    ) -> None: ...
    def commit(self) -> None: ...
    def make_wsgi_app(self) -> Router: ...
    def get_settings(self) -> dict[str, Any]: ...
    def add_settings(self, settings: Mapping[str, Any] | None = None, **kw: Any) -> None: ...
    def maybe_dotted(self, dotted: Any) -> Any: ...
    def action(
        self,
        discriminator: Any,
        callable: Callable[..., object] | None = None,
        args: tuple[Any, ...] = (),
        kw: dict[str, Any] | None = None,
        order: int = 0,
        introspectables: Any = (),
        **extra: Any,
    ) -> None: ...
    def add_directive(
        self, name: str, directive: Callable[..., object] | str, action_wrap: bool = True
    ) -> None: ...
    def add_request_method(
        self,
        callable: Callable[..., object] | str | None = None,
        name: str | None = None,
        property: bool = False,
        reify: bool = False,
    ) -> None: ...
    def add_tween(self, tween_factory: str, under: Any = None, over: Any = None) -> None: ...
    def add_subscriber(
        self, subscriber: Callable[[Any], object] | str, iface: Any = None, **predicates: Any
    ) -> None: ...
    def add_route(self, name: str, pattern: str | None = None, **kw: Any) -> None: ...
    def add_view(self, view: Any = None, name: str = "", **view_options: Any) -> None: ...
    def add_exception_view(
        self, view: Any = None, context: Any = None, **view_options: Any
    ) -> None: ...
    def add_view_deriver(
        self, deriver: Any, name: str | None = None, under: Any = None, over: Any = None
    ) -> None: ...
    def add_renderer(self, name: str | None, factory: Any) -> None: ...
    def set_security_policy(self, policy: Any) -> None: ...
    def set_root_factory(self, factory: Any) -> None: ...
    # Directives added with add_directive (config.add_job_action...) are looked up by
    # name at run time.
    def __getattr__(self, name: str) -> Any: ...

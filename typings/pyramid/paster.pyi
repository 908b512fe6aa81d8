from typing import Any

from pyramid.router import Router

def get_app(
    config_uri: str, name: str | None = None, options: dict[str, str] | None = None
) -> Router: ...
def get_appsettings(
    config_uri: str, name: str | None = None, options: dict[str, str] | None = None
) -> dict[str, Any]: ...
def setup_logging(config_uri: str, global_conf: dict[str, str] | None = None) -> None: ...

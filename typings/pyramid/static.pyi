from typing import Any

from pyramid.request import Request
from pyramid.response import Response

class static_view:
    def __init__(
        self,
        root_dir: str,
        cache_max_age: int | None = 3600,
        package_name: str | None = None,
        use_subpath: bool = False,
        index: str = "index.html",
        reload: bool = False,
        content_encodings: Any = (),
    ) -> None: ...
    def __call__(self, context: Any, request: Request) -> Response: ...

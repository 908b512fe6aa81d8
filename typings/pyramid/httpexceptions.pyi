from typing import Any

from pyramid.response import Response

class HTTPException(Response, Exception):
    code: int
    title: str
    explanation: str
    message: str
    detail: Any
    comment: Any
    def __init__(
        self,
        detail: Any = None,
        headers: Any = None,
        comment: Any = None,
        body_template: str | None = None,
        json_formatter: Any = None,
        **kw: Any,
    ) -> None: ...

class HTTPError(HTTPException): ...
class HTTPRedirection(HTTPException): ...
class HTTPSuccessful(HTTPException): ...
class HTTPNoContent(HTTPSuccessful): ...

class _HTTPMove(HTTPRedirection):
    def __init__(
        self,
        location: str = "",
        detail: Any = None,
        headers: Any = None,
        comment: Any = None,
        body_template: str | None = None,
        **kw: Any,
    ) -> None: ...

class HTTPFound(_HTTPMove): ...
class HTTPClientError(HTTPError): ...
class HTTPBadRequest(HTTPClientError): ...
class HTTPUnauthorized(HTTPClientError): ...

class HTTPForbidden(HTTPClientError):
    result: Any
    def __init__(
        self,
        detail: Any = None,
        headers: Any = None,
        comment: Any = None,
        body_template: str | None = None,
        result: Any = None,
        **kw: Any,
    ) -> None: ...

class HTTPNotFound(HTTPClientError): ...
class HTTPMethodNotAllowed(HTTPClientError): ...
class HTTPUnsupportedMediaType(HTTPClientError): ...

status_map: dict[int, type[HTTPException]]

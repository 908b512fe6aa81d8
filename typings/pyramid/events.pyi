from pyramid.request import Request
from pyramid.response import Response
from pyramid.router import Router

class ApplicationCreated:
    app: Router
    object: Router
    def __init__(self, app: Router) -> None: ...

class NewRequest:
    request: Request
    def __init__(self, request: Request) -> None: ...

class NewResponse:
    request: Request
    response: Response
    def __init__(self, request: Request, response: Response) -> None: ...

"""``GET /@openapi``: the OpenAPI 3.1 document of the API (:mod:`nick_jobs.web.openapi`).

Open to anyone, as the API's shape is no secret, and cacheable: the document is made
once per application, with an ``ETag`` a client revalidates it by (``304``).
"""

from __future__ import annotations

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED

from nick_jobs.web import openapi
from nick_jobs.web.resources import Root
from nick_jobs.web.views import api_view

#: Seconds a client or proxy may keep the document before it asks again.
MAX_AGE_S = 300


@api_view(context=Root, name="@openapi", request_method="GET", permission=NO_PERMISSION_REQUIRED)
def openapi_view(context: Root, request: Request) -> Response:
    body, etag = openapi.served(request.registry)
    # JSON is UTF-8 by definition: no charset, as the API's other answers.
    response = Response(body=body, content_type="application/json", conditional_response=True)
    response.etag = etag
    response.cache_control = f"public, max-age={MAX_AGE_S}"
    return response


def includeme(config: Configurator) -> None:
    config.scan(__name__)

"""Reading a JSON request body: media type, size and shape checked before parsing.

The body is read as strict JSON (RFC 8259): ``NaN``, ``Infinity`` and ``-Infinity``,
which Python's parser takes, are refused, and so is a number beyond the range of a
double (``1e400``, which would become infinity). Strings may not hold a lone UTF-16
surrogate (``"\\ud800"``: no character, and no UTF-8 to write it in) or NUL
(``"\\u0000"``, which PostgreSQL can store neither in text nor in jsonb). Whatever is
accepted can be stored on every backend and written back as strict JSON.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pyramid.request import Request

from nick_jobs.web.errors import Error, api_error

# An escape puts a surrogate or NUL in a parsed string, or an odd charset (utf-7) puts a
# raw surrogate in the text. The walk over the parsed strings runs only for such a body.
_SUSPECT = re.compile("\\\\u(?:[dD][89abcdefABCDEF]|0000)|[\x00\ud800-\udfff]")
_SURROGATE_OR_NUL = re.compile("[\x00\ud800-\udfff]")


class NotStrictJSON(ValueError):
    """JSON that Python reads but that is not strict JSON; the message says why."""


def _refuse_constant(name: str) -> Any:
    raise NotStrictJSON(f"JSON has no {name}; send a number, or null.")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise NotStrictJSON(f"The number {text[:40]} is beyond the range of a double.")
    return value


def loads(text: str) -> Any:
    """Parse ``text`` as strict JSON; ``ValueError`` (:class:`NotStrictJSON` with its
    reason for what only Python would take) when it is not."""
    data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    if _SUSPECT.search(text):
        _check_strings(data)
    return data


def _check_strings(value: Any) -> None:
    # Iterative: a deep document must not hit the recursion limit a second time.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            _check_string(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_string(key)
                pending.append(child)
        elif isinstance(item, list):
            pending.extend(item)


def _check_string(text: str) -> None:
    found = _SURROGATE_OR_NUL.search(text)
    if found is None:
        return
    if found.group() == "\x00":
        raise NotStrictJSON("A string holds a NUL character (\\u0000), which can't be stored.")
    raise NotStrictJSON(
        "A string holds a lone UTF-16 surrogate (\\ud800 to \\udfff), which is no character."
    )


def json_body(request: Request) -> dict[str, Any]:
    """The body as a dict, or a 413/415/400 error with the JSON error body."""
    data = json_value(request)
    if not isinstance(data, dict):
        raise api_error(Error.INVALID_JSON, "The body must be a JSON object.")
    return data


def json_object_or_array(request: Request) -> dict[str, Any] | list[Any]:
    """The body as a dict or a list (a bulk request), or a 413/415/400 error."""
    data = json_value(request)
    if not isinstance(data, dict | list):
        raise api_error(Error.INVALID_JSON, "The body must be a JSON object or array.")
    return data


def json_value(request: Request) -> Any:
    """The body as JSON, or a 413/415/400 error with the JSON error body."""
    limit = request.registry["nick_jobs.settings"].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise api_error(Error.REQUEST_TOO_LARGE, f"The body exceeds the limit of {limit} bytes.")
    if request.content_type != "application/json":
        raise api_error(
            Error.UNSUPPORTED_MEDIA_TYPE,
            "Send the body as JSON with Content-Type: application/json.",
        )
    # Chunked bodies have no Content-Length: read at most one byte past the limit.
    raw = request.body_file.read(limit + 1)
    if len(raw) > limit:
        raise api_error(Error.REQUEST_TOO_LARGE, f"The body exceeds the limit of {limit} bytes.")
    charset = request.charset or "utf-8"
    try:
        text = raw.decode(charset)
    except LookupError:
        # Unknown to Python (charset=nonexistent), or a codec of bytes, not of text
        # (rot13, base64).
        raise api_error(
            Error.UNSUPPORTED_CHARSET,
            f"The charset {charset[:40]!r} is not a text encoding this server reads; send UTF-8.",
        ) from None
    except UnicodeError:
        raise api_error(Error.INVALID_JSON, f"The body is not valid {charset[:40]}.") from None
    try:
        data = loads(text)
    except NotStrictJSON as exc:
        raise api_error(Error.INVALID_JSON, str(exc)) from None
    except ValueError:
        raise api_error(Error.INVALID_JSON, "The body is not valid JSON.") from None
    except RecursionError:
        # Valid JSON nested deeper than the parser can follow: still the client's fault.
        raise api_error(Error.INVALID_JSON, "The body is nested too deeply.") from None
    return data

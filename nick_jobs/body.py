"""Reading a JSON request body: media type, size and shape checked before parsing."""

from __future__ import annotations

import json
from typing import Any

from .errors import api_error


def json_body(request) -> dict[str, Any]:
    """The body as a dict, or a 413/415/400 error with the JSON error body."""
    limit = request.registry["nick_jobs.settings"].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise api_error(413, "Request too large", f"The body exceeds the limit of {limit} bytes.")
    if request.content_type != "application/json":
        raise api_error(
            415,
            "Unsupported media type",
            "Send the body as JSON with Content-Type: application/json.",
        )
    # Chunked bodies have no Content-Length: read at most one byte past the limit.
    raw = request.body_file.read(limit + 1)
    if len(raw) > limit:
        raise api_error(413, "Request too large", f"The body exceeds the limit of {limit} bytes.")
    try:
        data = json.loads(raw.decode(request.charset or "utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise api_error(400, "Invalid JSON", "The body is not valid JSON.") from None
    except RecursionError:
        # Valid JSON nested deeper than the parser can follow: still the client's fault.
        raise api_error(400, "Invalid JSON", "The body is nested too deeply.") from None
    if not isinstance(data, dict):
        raise api_error(400, "Invalid JSON", "The body must be a JSON object.")
    return data

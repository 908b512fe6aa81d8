"""A psycopg cursor whose ``description`` is built once for each kind of result.

psycopg builds ``cursor.description`` afresh each time it is read: one ``Column`` per
field, each decoding its name and looking up its type, 35 µs for a job row's 22 columns.
SQLAlchemy reads it once for every statement that returns rows, so a ``GET`` of a job
paid that on every request for the same columns. Here the columns of a result with the
same field names, types, modifiers and sizes (and the same encoding) are the ones built
the first time; reading the key costs a tenth of building them.
"""

from __future__ import annotations

import psycopg

# The app's statements have a few dozen result shapes; the bound only guards against a
# caller that runs ad-hoc queries without end.
MAX_SHAPES = 4096
_SHAPES: dict[tuple, tuple[psycopg.Column, ...]] = {}


class Cursor(psycopg.Cursor):
    @property
    def description(self) -> list[psycopg.Column] | None:
        res = self.pgresult
        if res is None or not res.nfields:
            return super().description
        key = (
            self._conn.info.encoding,
            *[(res.fname(i), res.ftype(i), res.fmod(i), res.fsize(i)) for i in range(res.nfields)],
        )
        columns = _SHAPES.get(key)
        if columns is None:
            columns = tuple(super().description)
            if len(_SHAPES) >= MAX_SHAPES:
                _SHAPES.clear()
            _SHAPES[key] = columns
        return list(columns)

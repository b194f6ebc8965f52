"""Statements run straight on the DB-API cursor, for the ingest hot path.

Executing even a prebuilt Core statement costs SQLAlchemy about 50 us of Python per call
(execution context, cache key, result set-up): a quarter of a millisecond for the five
statements that index a received instance, a tenth of the receiver's CPU. A
:class:`DriverStatement` compiles its Core statement once per dialect and set of
parameter names and then executes the SQL text on the caller's DB-API connection, inside
the caller's transaction, with SQLAlchemy's own bind processors (timestamps on SQLite).
Database errors come back wrapped as SQLAlchemy's (IntegrityError, OperationalError, ...),
as with ``Connection.execute``; rows come back as the DB-API returns them (no result
processing: SQLite returns timestamps as text).

Only for statements with plain bound parameters (no expanding IN, no Python-side column
defaults left to fill): anything else should use ``Connection.execute``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Insert
from sqlalchemy.sql.expression import ClauseElement


@dataclass(frozen=True)
class _Prepared:
    sql: str
    positional: bool
    # (bind name, key in the caller's parameters or None for a literal, literal, processor)
    binds: tuple[tuple[str, str | None, Any, Callable[[Any], Any] | None], ...]


class DriverStatement:
    """A Core statement, executed on the DB-API cursor of the caller's connection."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._prepared: dict[tuple[str, frozenset[str]], _Prepared] = {}

    def _prepare(self, conn: Connection, keys: frozenset[str]) -> _Prepared:
        dialect = conn.dialect
        column_keys = sorted(keys) if isinstance(self.statement, Insert) else None
        compiled: Any = self.statement.compile(dialect=dialect, column_keys=column_keys)
        if compiled.escaped_bind_names:
            raise ValueError("bind names that need escaping are not supported")
        names: Sequence[str] = (
            compiled.positiontup if compiled.positional else list(compiled.bind_names.values())
        )
        binds = []
        for name in names:
            bind = compiled.binds[name]
            if bind.expanding:
                raise ValueError("expanding parameters are not supported")
            if name in keys:
                key, literal = name, None
            elif bind.callable is None and bind.value is not None:
                key, literal = None, bind.value  # a literal in the statement (x + 1)
            else:
                raise ValueError(f"no value for parameter {name!r}")
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            binds.append((name, key, literal, processor))
        return _Prepared(compiled.string, compiled.positional, tuple(binds))

    def _run(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        key = (conn.dialect.name, frozenset(params))
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._prepared[key] = self._prepare(conn, key[1])
        values = []
        for _name, param, literal, processor in prepared.binds:
            value = params[param] if param is not None else literal
            values.append(processor(value) if processor is not None else value)
        bound: Any = (
            tuple(values)
            if prepared.positional
            else {name: value for (name, *_), value in zip(prepared.binds, values, strict=True)}
        )
        cursor = conn.connection.cursor()
        try:
            cursor.execute(prepared.sql, bound)
        except conn.dialect.loaded_dbapi.Error as exc:
            cursor.close()
            raise DBAPIError.instance(
                prepared.sql, bound, exc, conn.dialect.loaded_dbapi.Error
            ) from exc
        return cursor

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Execute with ``params``; returns the number of rows changed."""
        cursor = self._run(conn, params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def first(self, conn: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row, or None."""
        cursor = self._run(conn, params)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        return None if row is None else tuple(row)

    def scalar(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """The first column of the first row (an INSERT's RETURNING id, say)."""
        row = self.first(conn, params)
        if row is None:
            raise RuntimeError("the statement returned no row")
        return row[0]

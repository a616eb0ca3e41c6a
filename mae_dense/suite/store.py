"""The results store: one SQLite file that every finished cell is written to.

A cell is identified by its backbone's checkpoint (sha256 of the file; ``random`` for a from-scratch
backbone), its task, its config hash and its seed: the same cell run again, by another pipeline, on another
machine, weeks later, is not counted twice. A failed cell is kept with its one-line reason until a later
run of the same cell succeeds. Every cell carries its protocol card (:mod:`.cards`). Figures (qualitative panels, reconstructions) are kept per backbone, so
``mae-dense report --db FILE`` rebuilds the whole report from the store alone.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import PipelineError

SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    id INTEGER PRIMARY KEY,
    backbone TEXT NOT NULL,
    checkpoint_sha256 TEXT NOT NULL,
    checkpoint TEXT,
    model TEXT,
    task TEXT NOT NULL,
    config TEXT,
    config_hash TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    reason TEXT,
    mode TEXT,
    metrics TEXT NOT NULL DEFAULT '{}',
    missing TEXT NOT NULL DEFAULT '{}',
    recipe TEXT NOT NULL DEFAULT '{}',
    curves TEXT NOT NULL DEFAULT '{}',
    card TEXT NOT NULL DEFAULT '{}',
    versions TEXT NOT NULL DEFAULT '{}',
    git_commit TEXT,
    date TEXT NOT NULL,
    pipeline TEXT,
    work_dir TEXT,
    UNIQUE (checkpoint_sha256, task, config_hash, seed)
);
CREATE TABLE IF NOT EXISTS figures (
    id INTEGER PRIMARY KEY,
    backbone TEXT NOT NULL,
    checkpoint_sha256 TEXT NOT NULL,
    kind TEXT NOT NULL,
    caption TEXT,
    png BLOB NOT NULL,
    date TEXT NOT NULL,
    UNIQUE (checkpoint_sha256, backbone, kind)
);
"""
_JSON_COLUMNS = ('metrics', 'missing', 'recipe', 'curves', 'card', 'versions')
# PRAGMA user_version of the schema above; older stores are migrated on open (:data:`_MIGRATIONS`)
SCHEMA_VERSION = 1
_MIGRATIONS = {
    # 0 -> 1: protocol cards; cells stored before them keep an empty card (shown as 'no card')
    0: ("ALTER TABLE cells ADD COLUMN card TEXT NOT NULL DEFAULT '{}'",),
}
_IDENTITY = 'checkpoint_sha256 = ? AND task = ? AND config_hash = ? AND seed = ?'  # a cell, in SQL
_COLUMNS = (
    'backbone',
    'checkpoint_sha256',
    'checkpoint',
    'model',
    'task',
    'config',
    'config_hash',
    'seed',
    'status',
    'reason',
    'mode',
    *_JSON_COLUMNS,
    'git_commit',
    'date',
    'pipeline',
    'work_dir',
)


def now() -> str:
    """The date of a record: UTC, ISO 8601 to the second."""
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())


class ResultStore:
    """A SQLite results store; safe to use from the pipeline's worker threads (one connection per call)."""

    def __init__(self, path: str | Path, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise PipelineError(f'{self.path}: no results store there')
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            try:
                version = db.execute('PRAGMA user_version').fetchone()[0]
                fresh = db.execute("SELECT name FROM sqlite_master WHERE name = 'cells'").fetchone() is None
                db.executescript(SCHEMA)
            except sqlite3.DatabaseError as exc:
                raise PipelineError(f'{self.path}: not a results store ({exc})') from None
            self._migrate(db, SCHEMA_VERSION if fresh else version)

    def _migrate(self, db: sqlite3.Connection, version: int) -> None:
        """Bring a store of an older schema up to :data:`SCHEMA_VERSION` (a newer one is refused)."""
        if version > SCHEMA_VERSION:
            raise PipelineError(
                f'{self.path}: results store schema {version} is newer than this mae-dense ({SCHEMA_VERSION}); '
                'upgrade mae-dense'
            )
        for step in range(version, SCHEMA_VERSION):
            for statement in _MIGRATIONS[step]:
                db.execute(statement)
        db.execute(f'PRAGMA user_version = {SCHEMA_VERSION}')

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=60)
        db.row_factory = sqlite3.Row
        try:
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    def find(self, checkpoint_sha256: str, task: str, config_hash: str, seed: int) -> dict | None:
        """The finished cell with this identity, if the store has one."""
        with self._connect() as db:
            row = db.execute(
                f"SELECT * FROM cells WHERE {_IDENTITY} AND status = 'done'",
                (checkpoint_sha256, task, config_hash, seed),
            ).fetchone()
        return _decode(row) if row else None

    def add(self, record: dict[str, Any]) -> bool:
        """Store a cell; return False when a finished cell with its identity is already there.

        A finished cell replaces a failed one with the same identity; a failure never replaces a result
        (a newer failure of a cell that never finished only updates the reason).
        """
        record = {'date': now(), **record}
        identity = (record['checkpoint_sha256'], record['task'], record['config_hash'], record['seed'])
        values = [
            json.dumps(record.get(c) or {}, default=str) if c in _JSON_COLUMNS else record.get(c)
            for c in _COLUMNS
        ]
        with self._connect() as db:
            old = db.execute(f'SELECT status FROM cells WHERE {_IDENTITY}', identity).fetchone()
            if old is not None and (old['status'] == 'done' or record['status'] == 'failed'):
                if old['status'] == 'failed':
                    db.execute(
                        f'UPDATE cells SET reason = ?, date = ? WHERE {_IDENTITY}',
                        (record.get('reason'), record['date'], *identity),
                    )
                return False
            columns, marks = ', '.join(_COLUMNS), ', '.join('?' * len(_COLUMNS))
            db.execute(f'INSERT OR REPLACE INTO cells ({columns}) VALUES ({marks})', values)
        return True

    def cells(self) -> list[dict[str, Any]]:
        """Every stored cell, oldest first."""
        with self._connect() as db:
            return [_decode(r) for r in db.execute('SELECT * FROM cells ORDER BY date, id')]

    def add_figure(
        self, backbone: str, checkpoint_sha256: str, kind: str, png: bytes, caption: str = ''
    ) -> None:
        """Keep (or replace) a backbone's figure of one kind, e.g. ``'qualitative'``, ``'reconstruction'``."""
        with self._connect() as db:
            db.execute(
                'INSERT OR REPLACE INTO figures (backbone, checkpoint_sha256, kind, caption, png, date) '
                'VALUES (?, ?, ?, ?, ?, ?)',
                (backbone, checkpoint_sha256, kind, caption, png, now()),
            )

    def figures(self) -> list[dict[str, Any]]:
        """Every stored figure (backbone, checkpoint_sha256, kind, caption, png bytes)."""
        with self._connect() as db:
            return [dict(r) for r in db.execute('SELECT * FROM figures ORDER BY backbone, kind')]


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for c in _JSON_COLUMNS:
        out[c] = json.loads(out[c]) if out[c] else {}
    return out

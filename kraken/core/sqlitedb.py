"""SQLite files that hold acknowledged writes: opened durable, and refused whole when damaged.

A commit on a connection from :func:`open_durable` returns once its WAL frames are written and
fsynced (WAL, ``synchronous=FULL``), so a write acknowledged after its commit survives kill -9
and power loss. A file SQLite cannot read, or whose ``quick_check`` finds damage, raises
:class:`DamagedDatabase` with one line naming the file: the server refuses to start rather
than start empty over the good rows (``sqlite3 FILE .recover`` salvages them).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal


class DamagedDatabase(Exception):
    """The database file is not a readable SQLite database; the message names it."""


def open_durable(
    path: str | Path,
    isolation_level: Literal["DEFERRED", "EXCLUSIVE", "IMMEDIATE"] | None = "DEFERRED",
    check_same_thread: bool = True,
) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), isolation_level=isolation_level, check_same_thread=check_same_thread)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        problems = [" ".join(str(row[0]).split()) for row in db.execute("PRAGMA quick_check(5)")]
    except sqlite3.DatabaseError as e:
        db.close()
        raise DamagedDatabase(f"database {path} is unreadable ({e}); move it aside or recover it "
                              "(sqlite3 FILE .recover) before starting") from None
    if problems != ["ok"]:
        db.close()
        raise DamagedDatabase(f"database {path} is damaged ({'; '.join(problems)[:300]}); move it aside "
                              "or recover it (sqlite3 FILE .recover) before starting")
    return db

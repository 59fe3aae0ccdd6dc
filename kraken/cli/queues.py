"""``kraken queues FILE``: what a server's durable queues hold (origin write-back and replication,
build-index tag copies and cross-cluster replication), read from its ``journal.sqlite``.

Reads the file read-only, so it works while the server runs and after it died; the live figures
are also on the server's ``/metrics`` (``queue_depth``, ``queue_oldest_age_seconds``,
``queue_failures_total``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from typing import Any

from kraken.core.journal import QueueRow, read_rows


def add_parser(sub: Any) -> None:
    p = sub.add_parser("queues", help="list the pending tasks of a server's durable queues")
    p.add_argument("journal", help="the server's journal.sqlite (origin: in origin.store; "
                                   "build-index: in buildindex.storage)")
    p.add_argument("--queue", help="only this queue (writeback, replication, tag_copies, tag_replication)")
    p.add_argument("--tasks", type=int, default=10, metavar="N",
                   help="oldest tasks shown per queue [%(default)s]")
    p.add_argument("--json", action="store_true", help="every task as one JSON object a line")
    p.set_defaults(func=_queues)


def summary(rows: list[QueueRow], now: float, shown: int) -> list[str]:
    """Lines: per queue its depth, oldest age and most attempts, then its *shown* oldest tasks."""
    by_queue: dict[str, list[QueueRow]] = defaultdict(list)
    for row in rows:
        by_queue[row.queue].append(row)
    if not by_queue:
        return ["no pending tasks"]
    lines = []
    for name, queued in sorted(by_queue.items()):
        oldest = max(0.0, now - min(r.created for r in queued))
        lines.append(f"{name}: {len(queued)} pending, oldest {oldest:.0f} s, "
                     f"most attempts {max(r.attempts for r in queued)}")
        for row in sorted(queued, key=lambda r: r.created)[:shown]:
            error = f"  last error: {row.last_error}" if row.last_error else ""
            lines.append(f"  {row.key}  age {max(0.0, now - row.created):.0f} s, "
                         f"{row.attempts} failed attempts{error}")
    return lines


def _queues(args: argparse.Namespace) -> int:
    try:
        rows = read_rows(args.journal)
    except (FileNotFoundError, OSError) as e:
        print(f"kraken queues: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # sqlite3.DatabaseError and kin: not a journal
        print(f"kraken queues: {args.journal} is not a readable journal ({e})", file=sys.stderr)
        return 1
    if args.queue:
        rows = [r for r in rows if r.queue == args.queue]
    if args.json:
        for r in rows:
            print(json.dumps({"queue": r.queue, "key": r.key, "payload": r.payload, "created": r.created,
                              "attempts": r.attempts, "last_error": r.last_error}))
        return 0
    print("\n".join(summary(rows, time.time(), args.tasks)))
    return 0

"""``kraken pubsub``: ask a running kraken-pubsub about itself through its admin HTTP API."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from kraken.core import jsonlimits
from kraken.pubsub.timewords import time_delta_in_words

DEFAULT_ADMIN = "http://127.0.0.1:12356"
LEVELS = ("debug", "info", "warn", "error")


class AdminError(Exception):
    pass


def add_parser(sub: Any) -> None:
    p = sub.add_parser("pubsub", help="status and dumps of a running kraken-pubsub")
    p.add_argument("--admin", default=DEFAULT_ADMIN, help=f"admin API base URL (default {DEFAULT_ADMIN})")
    p.add_argument("--json", action="store_true", help="print the API's JSON instead of text")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the server")
    psub = p.add_subparsers(dest="pubsub_command", metavar="ACTION", required=True)
    psub.add_parser("status", help="Running (exit 0) or Not running (exit 1)").set_defaults(func=_status)
    psub.add_parser("dump-topics", help="topic<TAB>subscribers, most first").set_defaults(func=_topics)
    psub.add_parser("dump-queues", help="every connection with its queue").set_defaults(func=_queues)
    qt = psub.add_parser("dump-queue-topics", help="the topics of one connection")
    qt.add_argument("conn", type=int, help="connection id (see dump-queues)")
    qt.set_defaults(func=_queue_topics)
    ll = psub.add_parser("log-level", help="change the server's log level")
    ll.add_argument("level", choices=LEVELS)
    ll.set_defaults(func=_log_level)


def _call(args: argparse.Namespace, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        args.admin.rstrip("/") + path,
        data=data,
        method="PUT" if data is not None else "GET",
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as e:
        try:
            message = str(jsonlimits.loads(e.read(), strict=True)["error"]["message"])[:1000]
        except (ValueError, KeyError, TypeError):
            message = str(e)
        raise AdminError(message) from None
    except (urllib.error.URLError, OSError) as e:
        raise AdminError(f"cannot reach {args.admin}: {getattr(e, 'reason', e)}") from None
    try:
        return jsonlimits.loads(raw, strict=True)
    except ValueError as e:
        raise AdminError(f"{args.admin}{path} answered with unusable JSON: {str(e)[:200]}") from None


def _run(args: argparse.Namespace, path: str, show: Any, body: Any = None) -> int:
    try:
        result = _call(args, path, body)
    except AdminError as e:
        print(f"kraken pubsub: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    try:
        show(result)
    except (KeyError, TypeError, AttributeError) as e:
        message = f"the server's answer is not what this command expects ({e!r:.200})"
        print(f"kraken pubsub: {message}", file=sys.stderr)
        return 1
    return 0


def _status(args: argparse.Namespace) -> int:
    try:
        result = _call(args, "/status")
    except AdminError as e:
        if args.json:
            print(json.dumps({"status": "not running", "error": str(e)}))
        else:
            print(f"Status: {args.admin}\nNot running: {e}")
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"Status: {args.admin}\nRunning")
    return 0


def _topics(args: argparse.Namespace) -> int:
    def show(result: dict[str, Any]) -> None:
        for row in result["topics"]:
            print(f"{row['topic']}\t{row['subscribers']}")

    return _run(args, "/topics", show)


def _queues(args: argparse.Namespace) -> int:
    def show(result: dict[str, Any]) -> None:
        queues = result["queues"]
        print(f"{len(queues)} Waitress{'es' if len(queues) != 1 else ''}:\n")
        for q in queues:
            status = (
                f'[{{name,<<"{q["name"]}">>}},{{length,{q["length"]}}},'
                f"{{received_message_count,{q['received_message_count']}}},"
                f'{{time_since_start,"{time_delta_in_words(q["time_since_start"])}"}},'
                f'{{time_since_last_receive_messages,"{time_delta_in_words(q["time_since_last_receive_messages"])}"}}]'
            )
            print(f"Waitress {q['id']}, subscriptions: {q['subscriptions']}, status: {status}")

    return _run(args, "/queues", show)


def _queue_topics(args: argparse.Namespace) -> int:
    def show(result: dict[str, Any]) -> None:
        print(f"Waitress {result['id']}, topics: ")
        for topic in result["topics"]:
            print(topic)

    return _run(args, f"/queues/{args.conn}/topics", show)


def _log_level(args: argparse.Namespace) -> int:
    return _run(
        args,
        "/log-level",
        lambda result: print(f"Changed log level for {args.admin} to {result['level']}"),
        {"level": args.level},
    )

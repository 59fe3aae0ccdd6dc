"""``kraken pubsub``: publish and subscribe over the memcached protocol, and ask a running
kraken-pubsub about itself through its admin HTTP API."""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

from kraken.cli.hints import unreachable
from kraken.core import jsonlimits
from kraken.pubsub import wire
from kraken.pubsub.timewords import time_delta_in_words

DEFAULT_ADMIN = "http://127.0.0.1:12356"
DEFAULT_SERVER = "127.0.0.1:12355"
EXAMPLE = """examples:
  kraken pubsub publish news hello
  kraken pubsub subscribe news --since 60          # what news got in the last minute
  kraken pubsub subscribe news weather --follow --json"""
LEVELS = ("debug", "info", "warn", "error")


class ServerError(Exception):
    """The server could not be reached or answered with an error."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "pubsub",
        help="publish, subscribe, status and dumps of a running kraken-pubsub",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--admin", default=DEFAULT_ADMIN, help=f"admin API base URL (default {DEFAULT_ADMIN})")
    p.add_argument("--json", action="store_true", help="print the API's JSON instead of text")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the server")
    p.add_argument("--server", default=DEFAULT_SERVER, help="memcached protocol host:port [%(default)s]")
    psub = p.add_subparsers(dest="pubsub_command", metavar="ACTION", required=True)
    pub = psub.add_parser(
        "publish",
        help="publish each MESSAGE to TOPIC",
        epilog="example:\n  kraken pubsub publish news hello 'second message'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pub.add_argument("topic", help="topic (several: separate with commas, e.g. news,weather)")
    pub.add_argument("messages", nargs="+", metavar="MESSAGE")
    pub.set_defaults(func=_publish)
    _json_flag(pub)
    subscribe = psub.add_parser(
        "subscribe",
        help="print the messages of TOPIC...: what arrives within --wait seconds, or forever with --follow",
        epilog="examples:\n  kraken pubsub subscribe news --since 60\n"
        "  kraken pubsub subscribe news --follow --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subscribe.add_argument("topics", nargs="+", metavar="TOPIC")
    subscribe.add_argument("--follow", "-f", action="store_true", help="keep printing until interrupted")
    subscribe.add_argument(
        "--since", type=float, metavar="SECONDS", help="first replay what was published in the last SECONDS"
    )
    subscribe.add_argument(
        "--wait", type=float, default=2.0, help="without --follow: seconds to listen [%(default)s]"
    )
    subscribe.add_argument("--count", type=int, help="stop after this many messages")
    subscribe.add_argument("--interval", type=float, default=0.2, help="seconds between polls [%(default)s]")
    subscribe.set_defaults(func=_subscribe)
    _json_flag(subscribe)
    psub.add_parser(
        "status", help="Running (exit 0) or Not running (exit 1); a proxy's upstream link"
    ).set_defaults(func=_status)
    psub.add_parser("dump-topics", help="topic<TAB>subscribers, most first").set_defaults(func=_topics)
    psub.add_parser("dump-queues", help="every connection with its queue").set_defaults(func=_queues)
    qt = psub.add_parser("dump-queue-topics", help="the topics of one connection")
    qt.add_argument("conn", type=int, help="connection id (see dump-queues)")
    qt.set_defaults(func=_queue_topics)
    ll = psub.add_parser("log-level", help="change the server's log level")
    ll.add_argument("level", choices=LEVELS)
    ll.set_defaults(func=_log_level)


def _json_flag(p: argparse.ArgumentParser) -> None:
    # also accepted after the action; SUPPRESS keeps a --json given before it
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="one JSON object per line")


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
        raise ServerError(message) from None
    except (urllib.error.URLError, OSError) as e:
        raise ServerError(unreachable(args.admin, getattr(e, "reason", e))) from None
    try:
        return jsonlimits.loads(raw, strict=True)
    except ValueError as e:
        raise ServerError(f"{args.admin}{path} answered with unusable JSON: {str(e)[:200]}") from None


def _run(args: argparse.Namespace, path: str, show: Any, body: Any = None) -> int:
    try:
        result = _call(args, path, body)
    except ServerError as e:
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
    except ServerError as e:
        if args.json:
            print(json.dumps({"status": "not running", "error": str(e)}))
        else:
            print(f"Status: {args.admin}\nNot running: {e}")
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"Status: {args.admin}\nRunning")
        upstream = result.get("upstream")
        if upstream:  # a proxy node: where its link goes and how far behind it is
            print(describe_upstream(upstream))
        cluster = result.get("cluster")
        if cluster:
            print(describe_cluster(cluster))
    return 0


def describe_cluster(cluster: dict[str, Any]) -> str:
    lines = [f"Cluster: {len(cluster['members'])} members, this node {cluster['self']}"]
    for member in cluster["members"]:
        shards = " ".join(str(s) for s in member["owned_shards"]) or "none"
        if member["self"]:
            state = "this node"
        elif member["healthy"]:
            link = member["link"]
            state = f"healthy, lag {link['lag']:.3f} s, records in {link['records_in']}"
            state += f", out {link['records_out']}"
        else:
            state = "DOWN"
        lines.append(f"  {member['node']}: {state}; owns shards {shards}")
    return "\n".join(lines)


def describe_upstream(link: dict[str, Any]) -> str:
    if not link.get("connected"):
        state = f"not connected ({link.get('connections', 0)} connections so far)"
    else:
        state = (
            f"{link['peer']}, connected for {time_delta_in_words(int(link['connected_for'] or 0))}, "
            f"lag {link['lag']:.3f} s"
        )
    return (
        f"Upstream: {state}\n"
        f"  holding {link['topics']} topics and {link['patterns']} patterns, records in "
        f"{link['records_in']}, out {link['records_out']} ({link['waiting_records']} waiting), "
        f"failovers {link['connections'] - 1 if link['connections'] else 0} "
        f"({link['failovers_not_found']} could not replay)"
    )


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


# --- publish and subscribe over the memcached protocol -------------------------------------


class Connection:
    """A blocking memcached-protocol connection: one command, one reply."""

    def __init__(self, address: str, timeout: float) -> None:
        host, _, port = address.rpartition(":")
        try:
            self.sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout)
        except (OSError, ValueError) as e:
            raise ServerError(unreachable(address, e)) from None
        self.address = address
        self.parser = wire.ReplyParser()
        self.pending: list[wire.Reply] = []

    def call(self, command: bytes) -> wire.Reply:
        self.sock.sendall(command)
        while not self.pending:
            try:
                data = self.sock.recv(65536)
            except OSError as e:
                raise ServerError(f"{self.address}: {e}") from None
            if not data:
                raise ServerError(f"{self.address} closed the connection")
            self.pending += self.parser.feed(data)
        reply = self.pending.pop(0)
        if reply.kind in ("ERROR", "CLIENT_ERROR", "SERVER_ERROR"):
            reason = reply.text.decode("utf-8", "replace")
            raise ServerError(f"{self.address} answered {reply.kind} {reason}".strip())
        return reply

    def close(self) -> None:
        try:
            self.sock.sendall(b"quit\r\n")
        except OSError:
            pass
        self.sock.close()


def _topics_of(text: str) -> list[bytes]:
    return [t.encode() for t in text.split(",") if t]


def _publish(args: argparse.Namespace) -> int:
    topics = _topics_of(args.topic)
    records = [(topics, m.encode()) for m in args.messages]
    try:
        conn = Connection(args.server, args.timeout)
        try:
            conn.call(wire.set_command(b"publish", wire.publish_body(records)))
        finally:
            conn.close()
    except ServerError as e:
        print(f"kraken pubsub publish: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"published": len(records), "topics": [t.decode() for t in topics]}))
    else:
        print(f"published {len(records)} message{'s' if len(records) != 1 else ''} to {args.topic}")
    return 0


def _subscribe_command(args: argparse.Namespace, topics: Sequence[bytes], conn: Connection) -> bool:
    """Subscribe on *conn*; with ``--since`` replay history, reaching back at most to the server's
    start. Returns ``False`` if the server no longer holds all of the history asked for."""
    joined = b" ".join(topics)
    if args.since is None:
        return conn.call(wire.set_command(b"subscribe", joined)).kind == "STORED"
    horizon = time.time() - args.since
    try:
        uptime = float(_call(args, "/status")["uptime"])
        horizon = max(horizon, time.time() - uptime)
    except (ServerError, KeyError, TypeError, ValueError):
        pass
    data = b"%.6f\r\n%s" % (horizon, joined)
    return conn.call(wire.set_command(b"retro_subscribe", data)).kind == "STORED"


def _poll(conn: Connection, args: argparse.Namespace) -> Iterator[wire.Record]:
    deadline = None if args.follow else time.monotonic() + args.wait
    while deadline is None or time.monotonic() < deadline:
        reply = conn.call(wire.get_command())
        yield from reply.records()
        time.sleep(args.interval)


def _subscribe(args: argparse.Namespace) -> int:
    topics = [t.encode() for t in args.topics]
    count = 0
    try:
        conn = Connection(args.server, args.timeout)
        try:
            if not _subscribe_command(args, topics, conn):
                print("kraken pubsub subscribe: the server no longer holds all of --since; "
                      "showing new messages only", file=sys.stderr)
            for record_topics, payload in _poll(conn, args):
                names = [t.decode("utf-8", "replace") for t in record_topics]
                text = payload.decode("utf-8", "replace")
                if args.json:
                    print(json.dumps({"topics": names, "message": text}), flush=True)
                else:
                    print(f"{' '.join(names)}\t{text}", flush=True)
                count += 1
                if args.count is not None and count >= args.count:
                    break
        finally:
            conn.close()
    except ServerError as e:
        print(f"kraken pubsub subscribe: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0

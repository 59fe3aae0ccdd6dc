"""``kraken pipeline``: a thin client of the kraken-pipeline HTTP JSON API.

JSON arguments are inline JSON, ``@FILE`` or ``-`` (standard input). Query commands print
pretty JSON; ``stream`` and ``spans`` print each NDJSON line as it arrives. The exit code is
0 for a 2xx answer and 1 otherwise (the error body goes to standard error).
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from kraken.cli.hints import unreachable
from kraken.core import jsonlimits
from kraken.core.tls import stdlib_client_context
from kraken.pipeline.answers import MAX_JSON_DEPTH

SERVICE_QUERIES = ("status", "definition", "state", "start", "stop", "delete")
PIPELINE_QUERIES = ("status", "definition", "start", "stop", "delete", "stats", "components")
_POSTS = {"start", "stop", "delete"}


class Client:
    def __init__(
        self,
        url: str,
        cacert: str | None,
        cert: str | None,
        key: str | None,
        timeout: float,
        token: str | None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.context: ssl.SSLContext | None = None
        if self.url.startswith("https://"):
            self.context = stdlib_client_context(cacert, cert, key, {"pipeline"})

    def open(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        return urllib.request.urlopen(req, timeout=self.timeout, context=self.context)

    def run(self, method: str, path: str, body: Any = None, lines: bool = False) -> int:
        try:
            with self.open(method, path, body) as resp:
                if lines:
                    for line in resp:
                        if line.strip():
                            print(json.dumps(_answer(line)), flush=True)
                    return 0
                raw = resp.read()
                print(json.dumps(_answer(raw), indent=2) if raw.strip() else "null")
                return 0
        except ValueError as e:
            message = f"{self.url}{path} answered with unusable JSON: {str(e)[:200]}"
            print(f"kraken pipeline: {message}", file=sys.stderr)
            return 1
        except urllib.error.HTTPError as e:
            print(e.read().decode("utf-8", "replace") or f"HTTP {e.code}", file=sys.stderr)
            return 1
        except urllib.error.URLError as e:
            print(unreachable(self.url, e.reason), file=sys.stderr)
            return 1


def _answer(raw: bytes) -> Any:
    return jsonlimits.loads(raw, MAX_JSON_DEPTH, strict=True)


def load_json(text: str) -> Any:
    if text == "-":
        return json.load(sys.stdin)
    if text.startswith("@"):
        return json.loads(Path(text[1:]).read_text())
    return json.loads(text)


def _files(paths: list[str]) -> list[Any]:
    out: list[Any] = []
    for p in paths:
        if p.lstrip().startswith(("{", "[")) or p == "-" or p.startswith("@"):
            data = load_json(p)
            out.extend(data if isinstance(data, list) else [data])
            continue
        path = Path(p)
        files = sorted(path.glob("*.json")) if path.is_dir() else [path]
        for f in files:
            data = json.loads(f.read_text())
            out.extend(data if isinstance(data, list) else [data])
    return out


def _client(args: argparse.Namespace) -> Client:
    return Client(
        args.url,
        args.cacert,
        args.cert,
        args.key,
        args.timeout,
        args.token or os.environ.get("KRAKEN_PIPELINE_TOKEN"),
    )


def _services(args: argparse.Namespace) -> int:
    c, action = _client(args), args.action
    if action == "list":
        return c.run("GET", "/services")
    if action == "define":
        return c.run("POST", "/services/define", _files(args.args))
    if action == "call":
        if len(args.args) != 3:
            raise SystemExit("usage: kraken pipeline services call NAME FUNCTION JSON")
        name, function, payload = args.args
        return c.run("POST", f"/services/call/{quote(name)}/{quote(function)}", load_json(payload))
    name = _one_name(args)
    method = "POST" if action in _POSTS else "GET"
    body = load_json(args.args[1]) if len(args.args) > 1 else ({} if method == "POST" else None)
    return c.run(method, f"/services/{action}/{quote(name)}", body)


def _pipelines(args: argparse.Namespace) -> int:
    c, action = _client(args), args.action
    if action == "list":
        return c.run("GET", "/pipelines")
    if action == "define":
        code = 0
        for definition in _files(args.args):
            code |= c.run("POST", "/pipelines/define", definition)
        return code
    name = _one_name(args)
    if action in ("call", "cast", "stream"):
        if len(args.args) != 2:
            raise SystemExit(f"usage: kraken pipeline pipelines {action} NAME JSON")
        query = "?debug=true" if args.debug else ""
        return c.run(
            "POST",
            f"/pipelines/{action}/{quote(name)}{query}",
            load_json(args.args[1]),
            lines=action == "stream",
        )
    if action == "spans":
        return c.run(
            "GET",
            f"/pipelines/spans/{quote(name)}" + (f"?limit={args.limit}" if args.limit else ""),
            lines=True,
        )
    method = "POST" if action in _POSTS else "GET"
    body = (load_json(args.args[1]) if len(args.args) > 1 else {}) if method == "POST" else None
    return c.run(method, f"/pipelines/{action}/{quote(name)}", body)


def _one_name(args: argparse.Namespace) -> str:
    if not args.args:
        raise SystemExit(f"usage: kraken pipeline {args.area} {args.action} NAME")
    return args.args[0]


def _routes(args: argparse.Namespace) -> int:
    c = _client(args)
    if args.table is None:
        return c.run("GET", "/routes")
    return c.run("POST", "/routes/define", load_json(args.table))


def _event(args: argparse.Namespace) -> int:
    query = "?debug=true" if getattr(args, "debug", False) else ""
    return _client(args).run(
        "POST", f"/{args.mode}{query}", load_json(args.event), lines=args.mode == "stream"
    )


def _triggers(args: argparse.Namespace) -> int:
    c, action = _client(args), args.action
    if action == "list":
        return c.run("GET", "/triggers")
    if action == "define":
        code = 0
        for definition in _files(args.args):
            code |= c.run("POST", "/triggers/define", definition)
        return code
    name = quote(_one_name(args))
    if action == "delete":
        return c.run("POST", f"/triggers/delete/{name}", {})
    return c.run("GET", f"/triggers/{action}/{name}")


def _dlq(args: argparse.Namespace) -> int:
    c, action = _client(args), args.action
    if action == "list":
        pairs = (("pipeline", args.pipeline), ("after", args.after), ("limit", args.limit))
        query = {k: v for k, v in pairs if v}
        return c.run("GET", "/dead_letters" + ("?" + urlencode(query) if query else ""))
    if action == "replay" and args.all:
        body: dict[str, Any] = {"from": args.start_from}
        if args.pipeline:
            body["pipeline"] = args.pipeline
        return c.run("POST", "/dead_letters/replay", body)
    if args.id is None:
        raise SystemExit(f"usage: kraken pipeline dlq {action} ID")
    if action == "show":
        return c.run("GET", f"/dead_letters/entry/{args.id}")
    if action == "replay":
        return c.run("POST", f"/dead_letters/replay/{args.id}", {"from": args.start_from})
    return c.run("POST", f"/dead_letters/delete/{args.id}", {})


def _versions(args: argparse.Namespace) -> int:
    c, name = _client(args), quote(args.name)
    if args.action == "list":
        return c.run("GET", f"/pipelines/versions/{name}")
    if args.action == "define":
        code = 0
        for definition in _files([args.name]):
            code |= c.run("POST", "/pipelines/define_version", definition)
        return code
    if args.action == "rollback":
        return c.run("POST", f"/pipelines/rollback/{name}", {})
    if args.version is None:
        raise SystemExit(f"usage: kraken pipeline versions {args.action} NAME VERSION")
    if args.action == "show":
        return c.run("GET", f"/pipelines/version/{name}/{args.version}")
    return c.run("POST", f"/pipelines/{args.action}/{name}/{args.version}", {})


def _diff(args: argparse.Namespace) -> int:
    query = {k: v for k, v in (("from", args.old), ("to", args.new)) if v is not None}
    c = _client(args)
    path = f"/pipelines/diff/{quote(args.name)}" + ("?" + urlencode(query) if query else "")
    if args.json:
        return c.run("GET", path)
    try:
        with c.open("GET", path) as resp:
            answer = _answer(resp.read())
    except urllib.error.HTTPError as e:
        print(e.read().decode("utf-8", "replace") or f"HTTP {e.code}", file=sys.stderr)
        return 1
    except urllib.error.URLError as e:
        print(unreachable(c.url, e.reason), file=sys.stderr)
        return 1
    print(answer["diff"] or f"v{answer['from']} and v{answer['to']} are the same", end="")
    return 0


def _apply(args: argparse.Namespace) -> int:
    """Define and start a project folder: services/*.json, pipelines/*.json, routes.json."""
    c, root, code = _client(args), Path(args.dir), 0
    parts = [root / "services", root / "pipelines", root / "routes.json"]
    if not any(part.exists() for part in parts):
        print(f"kraken pipeline apply: {root} is not a project folder "
              "(it has none of services/, pipelines/, routes.json)", file=sys.stderr)  # fmt: skip
        return 1
    for kind in ("services", "pipelines"):
        for definition in _files([str(root / kind)]) if (root / kind).is_dir() else []:
            name = quote(definition.get("name", ""))
            if _status(c, kind, name) == ":ready":
                c.run("POST", f"/{kind}/stop/{name}", {})
            code |= c.run("POST", f"/{kind}/define", definition)
            code |= c.run("POST", f"/{kind}/start/{name}", {})
    if (root / "routes.json").is_file():
        code |= c.run("POST", "/routes/define", json.loads((root / "routes.json").read_text()))
    return code


def _status(c: Client, kind: str, name: str) -> str:
    try:
        with c.open("GET", f"/{kind}/status/{name}") as resp:
            return str(_answer(resp.read())["status"])
    except (urllib.error.URLError, ValueError, KeyError, TypeError):
        return ":undefined"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("pipeline", help="flow pipelines: services, pipelines, routes, events")
    p.add_argument(
        "--url", default="http://127.0.0.1:4001", help="the kraken-pipeline API (https:// for TLS)"
    )
    p.add_argument("--cacert", help="CA bundle to verify an https server")
    p.add_argument("--cert", help="client certificate (PEM) for mutual TLS")
    p.add_argument("--key", help="client key (PEM)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for an answer")
    p.add_argument("--token", help="API token (default: $KRAKEN_PIPELINE_TOKEN)")
    psub = p.add_subparsers(dest="area", metavar="AREA", required=True)

    s = psub.add_parser(
        "services",
        help="list | define FILE|DIR... | status|definition|state|start|stop|delete "
        "NAME [JSON] | call NAME FUNCTION JSON",
    )
    s.add_argument("action", choices=("list", "define", "call", *SERVICE_QUERIES))
    s.add_argument("args", nargs="*")
    s.set_defaults(func=_services)

    pl = psub.add_parser(
        "pipelines",
        help="list | define FILE|DIR... | status|definition|start|stop|delete|stats|"
        "components NAME | call|cast|stream NAME JSON | spans NAME",
    )
    pl.add_argument(
        "action", choices=("list", "define", "call", "cast", "stream", "spans", *PIPELINE_QUERIES)
    )
    pl.add_argument("args", nargs="*")
    pl.add_argument("--debug", action="store_true", help="return debug envelopes")
    pl.add_argument("--limit", type=int, help="spans: stop after this many")
    pl.set_defaults(func=_pipelines)

    r = psub.add_parser("routes", help="show the routing table, or define it from JSON")
    r.add_argument("table", nargs="?")
    r.set_defaults(func=_routes)

    for mode in ("call", "cast", "stream"):
        e = psub.add_parser(mode, help=f"{mode} a type-routed event (or array of events)")
        e.add_argument("event")
        e.add_argument("--debug", action="store_true")
        e.set_defaults(func=_event, mode=mode)

    v = psub.add_parser(
        "versions",
        help="list NAME | define FILE|JSON (a new version beside the live one) | show|start|stop|switch "
        "NAME VERSION | rollback NAME",
    )
    v.add_argument("action", choices=("list", "define", "show", "start", "stop", "switch", "rollback"))
    v.add_argument("name", help="the pipeline (for define: the definition)")
    v.add_argument("version", nargs="?", type=int)
    v.set_defaults(func=_versions)

    df = psub.add_parser("diff", help="NAME [FROM [TO]]: what changed between two versions (default: "
                         "the one before the live one, and the live one)")
    df.add_argument("name")
    df.add_argument("old", nargs="?", type=int)
    df.add_argument("new", nargs="?", type=int)
    df.add_argument("--json", action="store_true", help="the changed paths and values as JSON")
    df.set_defaults(func=_diff)

    t = psub.add_parser(
        "triggers",
        help="list | define FILE|DIR|JSON... | status|definition|delete NAME (pubsub, cron, webhook)",
    )
    t.add_argument("action", choices=("list", "define", "status", "definition", "delete"))
    t.add_argument("args", nargs="*")
    t.set_defaults(func=_triggers)

    d = psub.add_parser(
        "dlq", help="dead letters: list [--pipeline P] | show ID | replay ID|--all [--from start] | delete ID"
    )
    d.add_argument("action", choices=("list", "show", "replay", "delete"))
    d.add_argument("id", nargs="?", type=int)
    d.add_argument("--pipeline", help="only this pipeline's dead letters")
    d.add_argument("--after", type=int, help="list: ids above this one (paging)")
    d.add_argument("--limit", type=int, help="list: at most this many (1000 at most)")
    d.add_argument("--all", action="store_true", help="replay: every dead letter (of --pipeline)")
    d.add_argument(
        "--from", dest="start_from", choices=("component", "start"), default="component",
        help="replay at the component that failed (default) or from the pipeline's start",
    )
    d.set_defaults(func=_dlq)

    a = psub.add_parser(
        "apply", help="define and start a project folder (services/, pipelines/, routes.json)"
    )
    a.add_argument("dir")
    a.set_defaults(func=_apply)

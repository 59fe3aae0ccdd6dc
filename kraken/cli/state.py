"""``kraken state``: list, read and change nodes of a kraken-state server, show its graph."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from kraken.cli import state_console, state_image
from kraken.cli.hints import missing_certificate, unreachable
from kraken.cli.progress import CountProgress
from kraken.state import model
from kraken.state.client import ClientError, StateClient
from kraken.state.model import ModelError

DEFAULT_URL = "https://127.0.0.1:3141"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("state", help="talk to a kraken-state server (nodes, values, graph, freeze/thaw)")
    p.add_argument("--url", default=os.environ.get("KRAKEN_STATE_URL", DEFAULT_URL), help="server base URL")
    p.add_argument("--pki", default="run/pki", help="directory with ca.pem and the client certificate")
    p.add_argument("--cert-name", default="client", help="certificate name in --pki (default client)")
    p.add_argument("--ca", help="CA bundle (default PKI/ca.pem)")
    p.add_argument("--cert", help="client certificate (default PKI/NAME.pem)")
    p.add_argument("--key", help="client key (default PKI/NAME.key)")
    ssub = p.add_subparsers(dest="state_command", metavar="ACTION", required=True)

    nodes = ssub.add_parser("nodes", help="list nodes: id, name, platform, physState, runState")
    nodes.add_argument("--dsc", action="store_true", help="discovered state instead of configured")
    nodes.add_argument("--json", action="store_true", help="print the JSON node list")
    nodes.set_defaults(func=_nodes)

    get = ssub.add_parser("get", help="print one node as JSON")
    get.add_argument("node", help="node id or nodename")
    get.add_argument("--dsc", action="store_true", help="discovered state instead of configured")
    get.set_defaults(func=_get)

    put = ssub.add_parser(
        "set", help="change values of a node, or of every node of a group: physState=POWER_ON /Busy=BUSY ..."
    )
    put.add_argument("node", nargs="?", help="node id or nodename (or --group)")
    put.add_argument("values", nargs="*", metavar="KEY=VALUE", help="JSON field name or URL path = value")
    put.add_argument("--dsc", action="store_true", help="write discovered state (use sparingly)")
    put.add_argument("--group", help="set the values on the group: every member inherits them")
    put.add_argument("--no-wait", action="store_true", help="with --group: do not wait for the nodes")
    put.add_argument("--timeout", type=float, default=600.0, help="with --group: seconds to wait (600)")
    put.add_argument("--quiet", action="store_true", help="no progress bar")
    put.set_defaults(func=_set)

    groups = ssub.add_parser("groups", help="list groups (--node: the groups of one node)")
    groups.add_argument("--node", help="node id or nodename")
    groups.add_argument("--json", action="store_true", help="print the JSON group list")
    groups.set_defaults(func=_groups)

    group = ssub.add_parser(
        "group", help="create or replace a group: NAME [--nodes a,b] [--parent P] KEY=VALUE..."
    )
    group.add_argument("name")
    group.add_argument("values", nargs="*", metavar="KEY=VALUE", help="values the members inherit")
    group.add_argument("--nodes", default="", help="comma-separated node ids or nodenames")
    group.add_argument("--parent", default="", help="group whose values this one inherits")
    group.add_argument("--delete", action="store_true", help="delete the group instead")
    group.set_defaults(func=_group)

    graph = ssub.add_parser("graph", help="the mutation graph (whole, or one node's with its path)")
    graph.add_argument("--node", help="node id or nodename")
    graph.add_argument("--dot", action="store_true", help="Graphviz dot instead of JSON")
    graph.set_defaults(func=_graph)

    for name, text in (("freeze", "stop the mutation engine"), ("thaw", "restart the mutation engine")):
        action = ssub.add_parser(name, help=text)
        action.set_defaults(func=_sme, action=name)

    console = ssub.add_parser(
        "console", help="join this terminal to a node's serial console (~. at line start quits)",
        epilog=state_console.EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    console.add_argument("node", help="node id or nodename")
    console.add_argument("--escape", default="~", help="escape character (default ~): ~. quits, ~~ sends ~")
    console.add_argument("--no-raw", action="store_true", help="leave the terminal in line mode")
    console.add_argument(
        "--linger", type=float, default=1.0, help="seconds to wait for output after stdin ends (1)"
    )
    console.set_defaults(func=_console)

    state_image.add_parser(ssub, _run, _resolve)


def _client(args: argparse.Namespace) -> StateClient:
    pki = Path(args.pki)
    return StateClient(
        args.url,
        ca=args.ca or str(pki / "ca.pem"),
        cert=args.cert or str(pki / f"{args.cert_name}.pem"),
        key=args.key or str(pki / f"{args.cert_name}.key"),
    )


def _run(args: argparse.Namespace, action: Any) -> int:
    try:
        action(_client(args))
    except ClientError as e:
        message = str(e)
        if message.startswith("cannot reach "):
            message = unreachable(args.url, message.partition(": ")[2])
        print(f"kraken state: {message}", file=sys.stderr)
        return 1
    except (ModelError, ValueError) as e:
        print(f"kraken state: {e}", file=sys.stderr)
        return 1
    except (KeyError, TypeError, AttributeError) as e:
        message = f"the server's answer is not what this command expects ({e!r:.200})"
        print(f"kraken state: {message}", file=sys.stderr)
        return 1
    except OSError as e:
        pki = Path(args.pki)
        named = (args.ca or pki / "ca.pem", args.cert or pki / f"{args.cert_name}.pem")
        hint = next((h for h in (missing_certificate(str(p)) for p in named) if h), None)
        print(f"kraken state: {hint or f'cannot load certificates: {e}'}", file=sys.stderr)
        return 1
    return 0


def _resolve(api: StateClient, name: str) -> str:
    try:
        return model.canonical_id(name)
    except ModelError:
        pass
    matches = [n["id"] for n in api.get("/cfg/nodes")["nodes"] if n.get("nodename") == name]
    if len(matches) != 1:
        raise ValueError(
            f"no node named {name!r}" if not matches else f"{len(matches)} nodes are named {name!r}"
        )
    return str(matches[0])


def _nodes(args: argparse.Namespace) -> int:
    def show(api: StateClient) -> None:
        nodes = api.get("/dsc/nodes" if args.dsc else "/cfg/nodes")["nodes"]
        if args.json:
            print(json.dumps({"nodes": nodes}, indent=2))
            return
        rows = [("ID", "NODENAME", "PLATFORM", "PHYSSTATE", "RUNSTATE", "BUSY")]
        rows += [
            (n["id"], n["nodename"], n["platform"], n["physState"], n["runState"], n["busy"]) for n in nodes
        ]
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())

    return _run(args, show)


def _get(args: argparse.Namespace) -> int:
    def show(api: StateClient) -> None:
        node_id = _resolve(api, args.node)
        print(json.dumps(api.get(f"/{'dsc' if args.dsc else 'cfg'}/node/{node_id}"), indent=2))

    return _run(args, show)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _pairs(items: list[str]) -> list[tuple[str, Any]]:
    out = []
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        out.append((key, _parse_value(text)))
    return out


def _set(args: argparse.Namespace) -> int:
    items = list(args.values)
    if args.node is not None and "=" in args.node:
        items.insert(0, args.node)
        args.node = None
    if args.group is not None:
        if args.node is not None:
            print("kraken state: give either a NODE or --group, not both", file=sys.stderr)
            return 2
        if args.dsc:
            print("kraken state: --dsc cannot be used with --group", file=sys.stderr)
            return 2
        return _set_group(args, items)
    if args.node is None:
        print(
            "kraken state: name a NODE or a --group; refusing to change every node", file=sys.stderr
        )
        return 2
    if not items:
        print("kraken state: nothing to set (KEY=VALUE ...)", file=sys.stderr)
        return 2

    def change(api: StateClient) -> None:
        node_id = _resolve(api, args.node)
        where = "dsc" if args.dsc else "cfg"
        data = api.get(f"/{where}/node/{node_id}")
        for key, value in _pairs(items):
            if key.startswith("/") or key.startswith(model.TYPE_PREFIX):
                node = model.from_json(data)
                model.set_value(node, key, model.value_of(key, value))
                data = model.to_json(node)
            else:
                data[key] = value
        print(json.dumps(api.put(f"/{where}/node/{node_id}", data), indent=2))

    return _run(args, change)


def _set_group(args: argparse.Namespace, items: list[str]) -> int:
    result = {"code": 0}

    def change(api: StateClient) -> None:
        values = dict(_pairs(items))
        if not values:
            raise ValueError("nothing to set (KEY=VALUE ...)")
        op = api.post(f"/group/{args.group}/set", {"values": values})["operation"]
        if args.no_wait:
            print(json.dumps(op, indent=2))
            return
        bar = CountProgress(f"group {args.group}", sys.stderr, not args.quiet and sys.stderr.isatty())
        deadline = time.monotonic() + args.timeout
        while True:
            bar.update(op["done"], op["total"], op["failed"])
            if op["complete"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
            op = api.get(f"/operation/{op['id']}")
        bar.finish()
        print(json.dumps(op, indent=2))
        if not op["complete"]:
            print(
                f"kraken state: {op['total'] - op['done']} of {op['total']} nodes not there after "
                f"{args.timeout:g} s ({op['failed']} failed)",
                file=sys.stderr,
            )
            result["code"] = 1

    code = _run(args, change)
    return code or result["code"]


def _groups(args: argparse.Namespace) -> int:
    def show(api: StateClient) -> None:
        path = f"/groups?node={_resolve(api, args.node)}" if args.node else "/groups"
        groups = api.get(path)["groups"]
        if args.json:
            print(json.dumps({"groups": groups}, indent=2))
            return
        for g in groups:
            values = " ".join(f"{k}={v}" for k, v in g["values"].items())
            parent = f" < {g['parent']}" if g["parent"] else ""
            print(f"{g['name']}{parent}  {len(g['nodes'])} nodes  {values}".rstrip())

    return _run(args, show)


def _group(args: argparse.Namespace) -> int:
    def change(api: StateClient) -> None:
        if args.delete:
            print(json.dumps(api.request("DELETE", f"/group/{args.name}"), indent=2))
            return
        nodes = [_resolve(api, n) for n in args.nodes.split(",") if n]
        body = {"nodes": nodes, "parent": args.parent, "values": dict(_pairs(args.values))}
        print(json.dumps(api.put(f"/group/{args.name}", body), indent=2))

    return _run(args, change)


def _graph(args: argparse.Namespace) -> int:
    def show(api: StateClient) -> None:
        base = f"/graph/node/{_resolve(api, args.node)}" if args.node else "/graph"
        if args.dot:
            print(api.get(f"{base}/dot", raw=True), end="")
        else:
            print(json.dumps(api.get(f"{base}/json"), indent=2))

    return _run(args, show)


def _console(args: argparse.Namespace) -> int:
    if len(args.escape.encode()) != 1:
        print("kraken state: --escape must be one character", file=sys.stderr)
        return 2
    where: dict[str, Any] = {}

    def find(api: StateClient) -> None:
        where.update(api.get(f"/node/{_resolve(api, args.node)}/console"))

    code = _run(args, find)
    return code or state_console.run(args, where)


def _sme(args: argparse.Namespace) -> int:
    return _run(args, lambda api: print(json.dumps(api.request("POST", f"/sme/{args.action}"))))

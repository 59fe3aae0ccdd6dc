"""``kraken state``: list, read and change nodes of a kraken-state server, show its graph."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from kraken.cli import state_image
from kraken.cli.hints import missing_certificate, unreachable
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

    put = ssub.add_parser("set", help="change values of a node: physState=POWER_ON /Busy=BUSY ...")
    put.add_argument("node", help="node id or nodename")
    put.add_argument("values", nargs="+", metavar="KEY=VALUE", help="JSON field name or URL path = value")
    put.add_argument("--dsc", action="store_true", help="write discovered state (use sparingly)")
    put.set_defaults(func=_set)

    graph = ssub.add_parser("graph", help="the mutation graph (whole, or one node's with its path)")
    graph.add_argument("--node", help="node id or nodename")
    graph.add_argument("--dot", action="store_true", help="Graphviz dot instead of JSON")
    graph.set_defaults(func=_graph)

    for name, text in (("freeze", "stop the mutation engine"), ("thaw", "restart the mutation engine")):
        action = ssub.add_parser(name, help=text)
        action.set_defaults(func=_sme, action=name)

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


def _set(args: argparse.Namespace) -> int:
    def change(api: StateClient) -> None:
        node_id = _resolve(api, args.node)
        where = "dsc" if args.dsc else "cfg"
        data = api.get(f"/{where}/node/{node_id}")
        for item in args.values:
            key, sep, text = item.partition("=")
            if not sep or not key:
                raise ValueError(f"expected KEY=VALUE, got {item!r}")
            value = _parse_value(text)
            if key.startswith("/") or key.startswith(model.TYPE_PREFIX):
                node = model.from_json(data)
                model.set_value(node, key, model.value_of(key, value))
                data = model.to_json(node)
            else:
                data[key] = value
        print(json.dumps(api.put(f"/{where}/node/{node_id}", data), indent=2))

    return _run(args, change)


def _graph(args: argparse.Namespace) -> int:
    def show(api: StateClient) -> None:
        base = f"/graph/node/{_resolve(api, args.node)}" if args.node else "/graph"
        if args.dot:
            print(api.get(f"{base}/dot", raw=True), end="")
        else:
            print(json.dumps(api.get(f"{base}/json"), indent=2))

    return _run(args, show)


def _sme(args: argparse.Namespace) -> int:
    return _run(args, lambda api: print(json.dumps(api.request("POST", f"/sme/{args.action}"))))

"""The online shop (spec 4.2) end to end: a real kraken-pipeline twistd process orchestrating
four real HTTP stub services on loopback, driven only through the HTTP JSON API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.pipeline_http import Http, run_shop_stubs, wait_for
from tests.support import ServerProcess


@pytest.fixture
def shop_stubs(tmp_path: Path) -> Iterator[dict[str, int]]:
    yield from run_shop_stubs(tmp_path)


def shop_services(ports: dict[str, int]) -> list[dict[str, Any]]:
    def http(port: int, **extra: Any) -> dict[str, Any]:
        return {
            "module": "OctopusClientHttpFinch",
            "start": {"base_url": f"http://127.0.0.1:{port}", **extra},
        }

    return [
        {
            "name": "user-service",
            "client": http(ports["user"], headers={"Accept": "application/json"}),
            "interface": {
                "find": {
                    "input": {"user_id": {"type": "string"}, "required": ["user_id"]},
                    "prepare": {"method": "GET", "path": "'/users/' <> args['user_id']"},
                    "call": {"parse_json_body": True},
                    "transform": {
                        "id": "get_in(args, ['body', 'id'])",
                        "name": "get_in(args, ['body', 'name'])",
                        "email": "get_in(args, ['body', 'email'])",
                    },
                    "output": {
                        "id": {"type": "string"},
                        "email": {"type": "string"},
                        "required": ["id", "email"],
                    },
                },
                "register": {
                    "input": {
                        "name": {"type": "string"},
                        "email": {"type": "string"},
                        "password": {"type": "string"},
                        "required": ["name", "email", "password"],
                    },
                    "prepare": {
                        "method": "POST",
                        "path": "/users",
                        "params": {
                            "name": "args['name']",
                            "email": "args['email']",
                            "password": "args['password']",
                        },
                    },
                    "call": {"parse_json_body": True},
                    "transform": {"user_id": "get_in(args, ['body', 'id'])"},
                    "output": {"user_id": {"type": "string"}, "required": ["user_id"]},
                },
                "login": {
                    "input": {"required": ["email", "password"]},
                    "prepare": {
                        "method": "POST",
                        "path": "/sessions",
                        "params": {"email": "args['email']", "password": "args['password']"},
                    },
                    "call": {"parse_json_body": True},
                    "transform": {
                        "authenticated": "args['status'] == 200",
                        "user_id": "get_in(args, ['body', 'user_id'])",
                        "token": "get_in(args, ['body', 'token'])",
                    },
                },
            },
        },
        {
            "name": "product-service",
            "client": http(ports["product"]),
            "interface": {
                "find": {
                    "input": {"product_id": {"type": "string"}, "required": ["product_id"]},
                    "prepare": {"method": "GET", "path": "'/products/' <> args['product_id']"},
                    "call": {"parse_json_body": True},
                    "transform": {
                        "id": "get_in(args, ['body', 'id'])",
                        "title": "get_in(args, ['body', 'title'])",
                        "price": "get_in(args, ['body', 'price'])",
                        "currency": "get_in(args, ['body', 'currency'])",
                    },
                    "output": {
                        "id": {"type": "string"},
                        "price": {"type": "number"},
                        "required": ["id", "price"],
                    },
                },
                "search": {
                    "input": {"query": {"type": "string"}},
                    "prepare": {
                        "method": "GET",
                        "path": "/products",
                        "params": {"query": "args['query']", "limit": "args['limit']"},
                    },
                    "call": {"parse_json_body": True},
                    "transform": {
                        "products": "get_in(args, ['body', 'items'])",
                        "count": "length(get_in(args, ['body', 'items']))",
                    },
                    "output": {"products": {"type": "array"}},
                },
            },
        },
        {
            "name": "billing-service",
            "client": http(ports["billing"]),
            "interface": {
                "bill": {
                    "input": {
                        "user_id": {"type": "string"},
                        "product_id": {"type": "string"},
                        "amount": {"type": "number"},
                        "required": ["user_id", "product_id", "amount"],
                    },
                    "prepare": {
                        "method": "POST",
                        "path": "/bills",
                        "params": {
                            "user_id": "args['user_id']",
                            "product_id": "args['product_id']",
                            "amount": "args['amount']",
                        },
                    },
                    "call": {"parse_json_body": True},
                    "transform": {
                        "order_id": "get_in(args, ['body', 'order_id'])",
                        "status": "get_in(args, ['body', 'status'])",
                    },
                    "output": {"status": {"type": "string"}, "required": ["status"]},
                },
            },
        },
        {
            "name": "notification-service",
            "client": http(ports["notification"]),
            "interface": {
                "send-email": {
                    "input": {
                        "to": {"type": "string"},
                        "template": {"type": "string"},
                        "required": ["to", "template"],
                    },
                    "prepare": {
                        "method": "POST",
                        "path": "/emails",
                        "params": {
                            "to": "args['to']",
                            "template": "args['template']",
                            "order_id": "args['order_id']",
                        },
                    },
                    "call": {"parse_json_body": True},
                    "transform": {"message_id": "get_in(args, ['body', 'message_id'])"},
                },
            },
        },
    ]


ORDER_PIPELINE = {
    "name": "user-orders-a-product",
    "components": [
        {
            "type": "stage",
            "name": "find-user",
            "service": {"name": "user-service", "function": "find"},
            "prepare": {"user_id": "args['user_id']"},
            "transform": {"user": "args"},
        },
        {
            "type": "stage",
            "name": "find-product",
            "service": {"name": "product-service", "function": "find"},
            "prepare": {"product_id": "args['product_id']"},
            "transform": {"product": "args"},
        },
        {
            "type": "stage",
            "name": "bill-user",
            "service": {"name": "billing-service", "function": "bill"},
            "prepare": {
                "user_id": "get_in(args, ['user', 'id'])",
                "product_id": "get_in(args, ['product', 'id'])",
                "amount": "get_in(args, ['product', 'price'])",
            },
            "transform": {
                "order_id": "args['order_id']",
                "success": "if args['status'] == 'paid', do: 'yes', else: 'no'",
            },
        },
        {"type": "done", "name": "stop-unless-paid", "condition": "args['success'] != 'yes'"},
        {
            "type": "stage",
            "name": "notify-user",
            "service": {"name": "notification-service", "function": "send-email"},
            "prepare": {
                "to": "get_in(args, ['user', 'email'])",
                "template": "order-confirmation",
                "order_id": "args['order_id']",
            },
        },
    ],
}

OTHER_PIPELINES = [
    {
        "name": "user-registration",
        "components": [
            {
                "type": "stage",
                "name": "register-user",
                "service": {"name": "user-service", "function": "register"},
                "prepare": {"name": "args['name']", "email": "args['email']", "password": "args['password']"},
                "transform": {"user_id": "args['user_id']", "password": "hidden"},
            },
            {
                "type": "stage",
                "name": "send-welcome-email",
                "service": {"name": "notification-service", "function": "send-email"},
                "prepare": {"to": "args['email']", "template": "welcome"},
            },
        ],
    },
    {
        "name": "user-login",
        "components": [
            {
                "type": "stage",
                "name": "login",
                "service": {"name": "user-service", "function": "login"},
                "prepare": {"email": "args['email']", "password": "args['password']"},
                "transform": {
                    "authenticated": "args['authenticated']",
                    "user_id": "args['user_id']",
                    "token": "args['token']",
                    "password": "hidden",
                },
            },
            {
                "type": "switch",
                "name": "authenticated?",
                "condition": 'if args[\'authenticated\'], do: "ok", else: "failed"',
                "branches": {
                    "ok": [],
                    "failed": [
                        {
                            "type": "stage",
                            "name": "explain-failure",
                            "transform": {"error": "invalid credentials"},
                        }
                    ],
                },
            },
        ],
    },
    {
        "name": "user-lists-products",
        "components": [
            {
                "type": "stage",
                "name": "find-user",
                "service": {"name": "user-service", "function": "find"},
                "prepare": {"user_id": "args['user_id']"},
                "transform": {"user": "args"},
            },
            {
                "type": "stage",
                "name": "search-products",
                "service": {"name": "product-service", "function": "search"},
                "prepare": {"query": "args['query']", "limit": "args['limit'] || 20"},
                "transform": {"products": "args['products']", "count": "args['count']"},
            },
        ],
    },
]

ROUTES = {
    "user-registers": "user-registration",
    "user-logs-in": "user-login",
    "user-lists-products": "user-lists-products",
    "user-orders-a-product": "user-orders-a-product",
}


def order(user: str = "user-123", product: str = "product-456") -> dict[str, Any]:
    return {"type": "user-orders-a-product", "user_id": user, "product_id": product}


def pipeline_config(tmp_path: Path, outbound_allow: list[str]) -> dict[str, Any]:
    return {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "log": {"level": "info"},
        "pipeline": {
            "database": str(tmp_path / "pipeline.sqlite3"),
            "default_timeout": 10.0,
            "outbound_allow": outbound_allow,
        },
    }


def test_online_shop_acceptance(
    servers: ServerProcess.Pool, shop_stubs: dict[str, int], tmp_path: Path
) -> None:
    allow = [f"127.0.0.1:{port}" for port in shop_stubs.values()]
    proc = servers.start("kraken-pipeline", pipeline_config(tmp_path, allow), name="shop")
    api = Http(proc.port("http"))
    stubs = {name: Http(port) for name, port in shop_stubs.items()}

    def calls(name: str) -> list[dict[str, Any]]:
        return stubs[name].get("/_calls").json

    services = shop_services(shop_stubs)
    names = [s["name"] for s in services]
    assert api.ok("POST", "/services/define", services) == {"ok": names}
    for name in names:
        state = api.ok("POST", f"/services/start/{name}")["ok"]
        assert state["base_url"].startswith("http://127.0.0.1:") and state["pool_size"] == 10
        assert api.ok("GET", f"/services/status/{name}") == {"status": ":ready"}
    assert api.ok("POST", "/services/call/user-service/find", {"user_id": "user-123"}) == {
        "ok": {"id": "user-123", "name": "Alice", "email": "alice@example.com"}
    }
    assert calls("user")[0]["accept"] == "application/json"

    for definition in [ORDER_PIPELINE, *OTHER_PIPELINES]:
        assert api.ok("POST", "/pipelines/define", definition) == {"ok": definition["name"]}
        assert api.ok("POST", f"/pipelines/start/{definition['name']}")["ok"].startswith(
            "Elixir.Kraken.Pipelines."
        )
    assert api.ok("POST", "/routes/define", ROUTES) == {"ok": "Elixir.Kraken.RoutingTable"}
    assert api.ok("GET", "/routes") == ROUTES

    paid = api.ok("POST", "/call", order())
    assert paid["success"] == "yes" and paid["order_id"] == "789" and paid["type"] == "user-orders-a-product"
    assert paid["user"] == {"id": "user-123", "name": "Alice", "email": "alice@example.com"}
    assert paid["product"]["price"] == 42.5 and paid["user_id"] == "user-123"
    assert calls("billing")[-1]["query"] == {
        "user_id": "user-123",
        "product_id": "product-456",
        "amount": "42.5",
    }
    assert calls("notification")[-1]["query"] == {
        "to": "alice@example.com",
        "template": "order-confirmation",
        "order_id": "789",
    }
    emails = len(calls("notification"))

    declined = api.ok("POST", "/call", order(product="product-999"))
    assert declined["success"] == "no" and declined["order_id"] is None
    assert len(calls("notification")) == emails

    bills = len(calls("billing"))
    unknown = api.ok("POST", "/call", order(user="user-404"))
    assert unknown["type"] == "error_ip"
    assert "Expected String but got Null" in unknown["error"]["message"]
    assert unknown["component"]["name"] == "find-user"
    assert len(calls("billing")) == bills

    registered = api.ok(
        "POST",
        "/call",
        {"type": "user-registers", "name": "Bob", "email": "bob@example.com", "password": "secret"},
    )
    assert registered["user_id"] == "user-124" and registered["password"] == "hidden"
    assert calls("notification")[-1]["query"]["template"] == "welcome"
    login = api.ok(
        "POST", "/call", {"type": "user-logs-in", "email": "alice@example.com", "password": "secret"}
    )
    assert login["authenticated"] is True and login["token"] == "token-abc" and "error" not in login
    wrong = api.ok(
        "POST", "/call", {"type": "user-logs-in", "email": "alice@example.com", "password": "nope"}
    )
    assert wrong["authenticated"] is False and wrong["error"] == "invalid credentials"
    listed = api.ok(
        "POST", "/call", {"type": "user-lists-products", "user_id": "user-123", "query": "kraken"}
    )
    assert listed["count"] == 1 and listed["products"][0]["id"] == "product-456"
    assert calls("product")[-1]["query"] == {"query": "kraken", "limit": "20"}

    mixed = api.ok(
        "POST",
        "/call",
        [
            order(),
            {"x": 1},
            {"type": "user-logs-in", "email": "alice@example.com", "password": "secret"},
            order(product="product-999"),
        ],
    )
    assert len(mixed) == 4 and ["error", "no_type"] in mixed
    assert {m.get("success") for m in mixed if isinstance(m, dict)} == {"yes", "no", None}

    streamed = api.post("/stream", [order(), order(), order(product="product-999")])
    assert streamed.status == 200 and streamed.headers["content-type"] == "application/x-ndjson"
    assert sorted(e["success"] for e in streamed.lines) == ["no", "yes", "yes"]

    bills = len(calls("billing"))
    cast = api.ok("POST", "/cast", order())
    assert cast["ok"].startswith("0.")
    wait_for(lambda: len(calls("billing")) > bills, what="the cast order to reach billing")

    debug = api.ok("POST", "/call?debug=true", order())
    assert debug["type"] == "ip" and debug["event"]["success"] == "yes" and debug["init_event"] == order()
    assert [h[0][0] for h in debug["history"]][:2] == ["notify-user", "stop-unless-paid"]

    assert api.post("/call", {"user_id": "x"}).json == {"error": ":no_type"}
    assert api.post("/call", {"type": "nope"}).status == 400
    assert api.post("/call", {"type": "nope"}).json == {"error": ":no_route_for_type"}

    assert api.ok("POST", "/pipelines/stop/user-orders-a-product") == {"ok": "ok"}
    stopped = api.post("/call", order())
    assert (stopped.status, stopped.json) == (400, {"error": ":not_ready"})
    api.ok("POST", "/pipelines/start/user-orders-a-product")
    api.ok("POST", "/services/stop/billing-service")
    not_ready = api.ok("POST", "/call", order())
    assert not_ready["type"] == "error_ip" and not_ready["error"]["message"] == ":not_ready"
    assert not_ready["component"]["name"] == "bill-user"
    api.ok("POST", "/services/start/billing-service")

    redefined = {**ORDER_PIPELINE, "components": ORDER_PIPELINE["components"][:2]}
    assert api.post("/pipelines/define", redefined).json == {"error": ":already_started"}
    api.ok("POST", "/pipelines/stop/user-orders-a-product")
    api.ok("POST", "/pipelines/define", redefined)
    api.ok("POST", "/pipelines/start/user-orders-a-product")
    short = api.ok("POST", "/call", order())
    assert "product" in short and "success" not in short
    assert api.ok("GET", "/pipelines/definition/user-orders-a-product") == redefined

    stats = api.ok("GET", "/pipelines/stats/user-login")
    assert stats["components"]["login"]["calls"] >= 3 and stats["components"]["explain-failure"]["calls"] >= 1

    for definition in [ORDER_PIPELINE, *OTHER_PIPELINES]:
        assert api.ok("POST", f"/pipelines/delete/{definition['name']}") == {"ok": "ok"}
        assert api.ok("GET", f"/pipelines/status/{definition['name']}") == {"status": ":undefined"}
    for name in names:
        assert api.ok("POST", f"/services/delete/{name}") == {"ok": "ok"}
        assert api.ok("GET", f"/services/status/{name}") == {"status": ":undefined"}
    assert api.ok("GET", "/pipelines") == [] and api.ok("GET", "/services") == []


@pytest.mark.parametrize("with_error_step", [True, False])
def test_http_transport_errors(servers: ServerProcess.Pool, tmp_path: Path, with_error_step: bool) -> None:
    allow = ["http://no-such-host.invalid/"]
    proc = servers.start("kraken-pipeline", pipeline_config(tmp_path, allow), name="errors")
    api = Http(proc.port("http"))
    function: dict[str, Any] = {"prepare": {"method": "GET", "path": "/"}, "call": {"parse_json_body": True}}
    if with_error_step:
        function["error"] = {"error": True, "message": "args['message']"}
    api.ok(
        "POST",
        "/services/define",
        {
            "name": "error-service",
            "client": {
                "module": "OctopusClientHttpFinch",
                "start": {"base_url": "http://no-such-host.invalid/"},
            },
            "interface": {"do_call": function},
        },
    )
    api.ok("POST", "/services/start/error-service")
    answer = api.post("/services/call/error-service/do_call", {})
    if with_error_step:
        assert answer.json == {"ok": {"error": True, "message": "non-existing domain"}}
    else:
        assert answer.status == 400 and "step: :call" in answer.json["error"]
        assert "non-existing domain" in answer.json["error"]

"""The original's complete examples (spec 1.6): hello, add-mult-minus, and the GitHub
similar-followers pipeline (goto loop, composer clone, nested switches, dead-end)."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace
from typing import Any

from kraken.pipeline.lambdas.registry import register_lambda
from tests.support import REPO
from tests.unit.pipeline_fixtures import World, done

FOLLOWERS = {"antonmi": ["anton", "antonm", "bob"], "antonm": ["antonmi", "x"], "anton": []}

register_lambda(
    "FakeGithub",
    SimpleNamespace(
        find_users=lambda a: {"total_count": 1, "usernames": [a["query"]]},
        get_user=lambda a: {"username": a["username"], "name": a["username"].title(), "followers": 3},
        get_followers=lambda a: {"followers": FOLLOWERS.get(a["username"], [])},
    ),
)

SIMILAR_FOLLOWERS = {
    "name": "stream-similar-followers",
    "components": [
        {"type": "stage", "name": "init", "transform": {"counter": 0, "limit": "args['limit'] || 10"}},
        {
            "type": "stage",
            "name": "search",
            "service": {"name": "github", "function": "find_users"},
            "prepare": {"query": "args['query']", "per_page": 1},
            "transform": {"username": "get_in(args, ['usernames', Access.at(0)])"},
        },
        {"type": "goto-point", "name": "repeat"},
        {
            "type": "stage",
            "name": "get-user",
            "service": {"name": "github", "function": "get_user"},
            "prepare": {"username": "args['username']"},
            "transform": {"user_data": "args"},
        },
        {"type": "stage", "name": "inc-counter", "transform": {"counter": "args['counter'] + 1"}},
        {
            "type": "composer",
            "name": "clone-event",
            "memo": None,
            "service": {"name": "clone-service", "function": "clone"},
            "prepare": {"event": "args", "memo": "memo"},
            "compose": {"events": "args['events']", "memo": "args['memo']"},
        },
        {
            "type": "switch",
            "condition": 'if args[\'report\'], do: "output", else: "next-steps"',
            "branches": {
                "output": [
                    {
                        "type": "stage",
                        "name": "print",
                        "service": {"name": "io-inspect", "function": "print"},
                        "prepare": {"value": "args"},
                    }
                ],
                "next-steps": [
                    {
                        "type": "stage",
                        "name": "get-followers",
                        "service": {"name": "github", "function": "get_followers"},
                        "prepare": {"username": "args['username']"},
                        "transform": {"followers": "args['followers']"},
                    },
                    {
                        "type": "switch",
                        "prepare": {
                            "count": "length(args['followers'])",
                            "counter": "args['counter']",
                            "limit": "args['limit']",
                        },
                        "condition": (
                            "if args['counter'] > 0 && args['counter'] < args['limit'],"
                            ' do: "continue", else: "done"'
                        ),
                        "branches": {
                            "continue": [
                                {
                                    "type": "stage",
                                    "name": "find-closest",
                                    "service": {"name": "levenshtein", "function": "closest"},
                                    "prepare": {"name": "args['username']", "names": "args['followers']"},
                                    "transform": {"closest": "args['closest']"},
                                },
                                {
                                    "type": "stage",
                                    "name": "reassign-vars",
                                    "transform": {"username": "args['closest']", "followers": "hidden"},
                                },
                                {"type": "goto", "to": "repeat", "condition": "true"},
                            ],
                            "done": [{"type": "dead-end"}],
                        },
                    },
                ],
            },
        },
    ],
}


def lambda_service(name: str, module: str, *functions: str) -> dict[str, Any]:
    return {
        "name": name,
        "client": {"module": "octopus.lambda", "start": {"module": module}},
        "interface": {f: {"call": {"function": f}} for f in functions},
    }


def test_github_similar_followers() -> None:
    world = World()
    world.service(lambda_service("github", "FakeGithub", "find_users", "get_user", "get_followers"))
    world.service(lambda_service("clone-service", "Github.Lambdas.Clone", "clone"))
    world.service(lambda_service("io-inspect", "IoInspect", "print"))
    world.service(
        {
            **lambda_service("levenshtein", "Github.Lambdas.Distance", "closest"),
            "interface": {
                "closest": {
                    "input": {"name": {"type": "string"}, "names": {"type": "array"}},
                    "call": {"function": "closest"},
                    "output": {"closest": {"type": "string"}},
                }
            },
        }
    )
    world.pipeline(copy.deepcopy(SIMILAR_FOLLOWERS))
    rt = world.pipelines.runtime("stream-similar-followers")
    reports = rt.call({"type": "similar-followers", "query": "antonmi", "limit": 3})
    assert [(r["counter"], r["username"]) for r in reports] == [(1, "antonmi"), (2, "antonm"), (3, "antonmi")]
    assert all(r["report"] is True for r in reports)
    assert reports[0]["user_data"] == {"username": "antonmi", "name": "Antonmi", "followers": 3}
    assert reports[1]["followers"] == "hidden"


def test_hello_scaffold_twice() -> None:
    world = World()
    project = REPO / "etc/pipeline-project"
    for name in ("kv-store", "greeter"):
        world.service(json.loads((project / f"services/{name}.json").read_text()))
    rt = world.pipeline(json.loads((project / "pipelines/hello.json").read_text()))
    first = rt.call({"type": "hello", "name": "Anton"})
    assert first["message"] == "Hello, Anton!" and first["greeted"] == {"value": None}
    assert rt.call({"type": "hello", "name": "Anton"})["message"] == "I've already said hello to you, Anton."


def test_add_mult_minus() -> None:
    world = World()
    world.service(lambda_service("add-mult-minus", "AddMultMinus", "add_one", "mult_by_two", "minus_three"))
    rt = world.pipeline(
        {
            "name": "add-mult-minus-pipeline",
            "components": [
                {
                    "type": "stage",
                    "service": {"name": "add-mult-minus", "function": f},
                    "transform": {"event": "args['event']"},
                }
                for f in ("add_one", "mult_by_two", "minus_three")
            ],
        }
    )
    assert rt.call({"event": 2}) == {"event": 3}
    out: list[Any] = []
    done(rt.stream([{"event": i} for i in range(3)], out.append))
    assert out == [{"event": -1}, {"event": 1}, {"event": 3}]


def test_readme_order_pipeline_without_types_defines() -> None:
    world = World()
    readme = {
        "name": "user-orders-a-product",
        "components": [
            {"name": "find-user", "service": {"name": "user-service", "function": "find"}},
            {"name": "find-product", "service": {"name": "product-service", "function": "find"}},
            {"name": "bill-user", "service": {"name": "billing-service", "function": "bill"}},
            {"name": "notify-user", "service": {"name": "notification-service", "function": "send-email"}},
        ],
    }
    rt = world.pipeline(readme)
    failed = rt.call({"type": "user-orders-a-product", "user_id": "user-123", "product_id": "product-456"})
    assert failed["error"]["message"] == ":undefined" and failed["component"]["name"] == "find-user"

"""The mutation graph (networkx): which states a node can be driven through, and the path to take.

A graph vertex is a *spec*: the values of every mutator URL (a URL some mutation changes)
plus, in the general graph, the constraints collected on other URLs (``/Platform == ipmi``,
``/Busy != BUSY``). An edge is a mutation. Per node, the graph is built with the node's own
values for the non-mutator URLs fixed, so its vertices are just mutator states.

Exploration starts from the root spec (``/PhysState = PHYS_UNKNOWN``) and from every
mutation's *before* spec (so states such as PHYS_HANG, reached only by failures, are in the
graph). After every step, values whose discovery dependencies no longer hold are forgotten
(reset to zero): the dependencies of a mutator URL are the requirements common to every
mutation that moves it from its zero value.

Path choice: least total cost (default cost 1 per mutation, i.e. fewest mutations), ties broken
by fewer hops and then by the lexicographically smallest sequence of mutation names.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import networkx as nx

from kraken.state import model
from kraken.state.model import Node, PhysState
from kraken.state.modules.base import Mutation

_MEMO = 4096  # remembered forget() results (nodes share a handful of states)

Constraint = tuple[str, bool, Any]  # (url, must_equal, value)


@dataclass(frozen=True)
class Spec:
    values: tuple[Any, ...]
    constraints: frozenset[Constraint] = frozenset()


@dataclass(frozen=True)
class Edge:
    mutation: Mutation
    source: tuple[Any, ...]
    target: tuple[Any, ...]


def _zero(url: str) -> Any:
    enum = model.enum_for(url)
    return enum(0) if enum is not None else None


def _name(value: Any) -> str:
    return value.name if isinstance(value, IntEnum) else str(value)


class MutationGraph:
    def __init__(self, mutations: Iterable[Mutation], root: dict[str, Any] | None = None) -> None:
        self.mutations = sorted(mutations, key=lambda m: m.name)
        urls = sorted({u for m in self.mutations for u in m.mutates})
        self.mutators: tuple[str, ...] = tuple(urls)
        self.index = {u: i for i, u in enumerate(urls)}
        self.zero = tuple(_zero(u) for u in urls)
        others = {u for m in self.mutations for u in (*m.requires, *m.excludes)} - set(urls)
        self.fixed_urls: tuple[str, ...] = tuple(sorted(others))
        self.root = dict(root if root is not None else {"/PhysState": PhysState.PHYS_UNKNOWN})
        self.deps = self._dependencies()
        self._state_values = model.values_getter(self.mutators)
        self._fixed_values = model.values_getter(self.fixed_urls)
        self._graphs: dict[tuple[Any, ...] | None, nx.MultiDiGraph] = {}
        self._paths: dict[tuple[Any, ...], list[Edge] | None] = {}
        self._forgets: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # the few states nodes are in

    # -- discovery dependencies and forgetting ------------------------------------------------
    def _dependencies(self) -> dict[int, tuple[tuple[int, Any], ...]]:
        deps: dict[int, tuple[tuple[int, Any], ...]] = {}
        for url, i in self.index.items():
            common: dict[int, Any] | None = None
            for m in self.mutations:
                if url not in m.mutates or m.mutates[url][0] != self.zero[i]:
                    continue
                cond = {self.index[r]: v for r, v in m.requires.items() if r in self.index}
                for other, (before, _) in m.mutates.items():
                    j = self.index[other]
                    if other != url and before != self.zero[j]:
                        cond[j] = before
                common = cond if common is None else {k: v for k, v in common.items() if cond.get(k) == v}
            deps[i] = tuple(sorted((common or {}).items()))
        return deps

    def forget(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        """*values* with every value whose dependencies do not hold reset to zero."""
        try:
            return self._forgets[values]
        except KeyError:
            kept = self._forget(values)
            if len(self._forgets) >= _MEMO:
                self._forgets.clear()
            self._forgets[values] = kept
            return kept
        except TypeError:  # an unhashable value: work it out each time
            return self._forget(values)

    def _forget(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        current = list(values)
        changed = True
        while changed:
            changed = False
            for i, dep in self.deps.items():
                if current[i] != self.zero[i] and any(current[j] != v for j, v in dep):
                    current[i] = self.zero[i]
                    changed = True
        return tuple(current)

    def forgotten(self, dsc: Node) -> list[str]:
        """URLs of *dsc* that must be reset to zero because their dependencies do not hold."""
        values = self.state_of(dsc)
        kept = self.forget(values)
        return [self.mutators[i] for i in range(len(values)) if values[i] != kept[i]]

    # -- node views ----------------------------------------------------------------------------
    def state_of(self, node: Node) -> tuple[Any, ...]:
        return self._state_values(node)

    def fixed_of(self, node: Node) -> tuple[Any, ...]:
        return self._fixed_values(node)

    def target_of(self, cfg: Node) -> tuple[tuple[int, Any], ...]:
        """Non-zero Cfg mutator values: what the node must reach (zero means don't care)."""
        zero = self.zero
        values = self._state_values(cfg)
        return tuple((i, v) for i, v in enumerate(values) if v is not None and v != zero[i])

    @staticmethod
    def satisfies(values: tuple[Any, ...], target: tuple[tuple[int, Any], ...]) -> bool:
        return all(values[i] == v for i, v in target)

    # -- building --------------------------------------------------------------------------
    def _check(self, url: str, want: Any, equal: bool, spec: Spec, fixed: dict[str, Any] | None) -> bool:
        if url in self.index:
            return (spec.values[self.index[url]] == want) == equal
        if fixed is not None:
            return (fixed.get(url) == want) == equal
        for c_url, c_equal, c_value in spec.constraints:
            if c_url != url:
                continue
            if equal and ((c_equal and c_value != want) or (not c_equal and c_value == want)):
                return False
            if not equal and c_equal and c_value == want:
                return False
        return True

    def _apply(self, m: Mutation, spec: Spec, fixed: dict[str, Any] | None) -> Spec | None:
        for url, (before, _) in m.mutates.items():
            if spec.values[self.index[url]] != before:
                return None
        for url, want in m.requires.items():
            if not self._check(url, want, True, spec, fixed):
                return None
        for url, want in m.excludes.items():
            if not self._check(url, want, False, spec, fixed):
                return None
        values = list(spec.values)
        for url, (_, after) in m.mutates.items():
            values[self.index[url]] = after
        constraints = spec.constraints
        if fixed is None:
            new = {(u, True, v) for u, v in m.requires.items() if u not in self.index}
            new |= {(u, False, v) for u, v in m.excludes.items() if u not in self.index}
            constraints = constraints | frozenset(new)
        return Spec(self.forget(tuple(values)), constraints)

    def _seeds(self, fixed: dict[str, Any] | None) -> list[Spec]:
        root = list(self.zero)
        for url, value in self.root.items():
            if url in self.index:
                root[self.index[url]] = value
        seeds = [Spec(self.forget(tuple(root)))]
        for m in self.mutations:
            values = list(self.zero)
            for url, want in m.requires.items():
                if url in self.index:
                    values[self.index[url]] = want
            for url, (before, _) in m.mutates.items():
                values[self.index[url]] = before
            constraints: frozenset[Constraint] = frozenset()
            if fixed is None:
                constraints = frozenset(
                    {(u, True, v) for u, v in m.requires.items() if u not in self.index}
                    | {(u, False, v) for u, v in m.excludes.items() if u not in self.index}
                )
            spec = Spec(tuple(values), constraints)
            if self.forget(spec.values) == spec.values and self._apply(m, spec, fixed) is not None:
                seeds.append(spec)
        return seeds

    def _explore(self, graph: nx.MultiDiGraph, seeds: Iterable[Spec], fixed: dict[str, Any] | None) -> None:
        queue = [s for s in seeds if s not in graph]
        for s in queue:
            graph.add_node(s)
        while queue:
            spec = queue.pop(0)
            for m in self.mutations:
                after = self._apply(m, spec, fixed)
                if after is None or after == spec:
                    continue
                if after not in graph:
                    graph.add_node(after)
                    queue.append(after)
                graph.add_edge(spec, after, key=m.name, mutation=m, cost=m.cost)

    def graph(self, fixed: tuple[Any, ...] | None = None) -> nx.MultiDiGraph:
        """The whole graph (``fixed=None``, with constraints) or one node's (its fixed values)."""
        g = self._graphs.get(fixed)
        if g is None:
            g = nx.MultiDiGraph()
            fixed_map = dict(zip(self.fixed_urls, fixed)) if fixed is not None else None
            self._explore(g, self._seeds(fixed_map), fixed_map)
            self._graphs[fixed] = g
        return g

    def node_graph(self, cfg: Node) -> nx.MultiDiGraph:
        return self.graph(self.fixed_of(cfg))

    # -- path finding ---------------------------------------------------------------------------
    def path(
        self, start: tuple[Any, ...], target: tuple[tuple[int, Any], ...], fixed: tuple[Any, ...]
    ) -> list[Edge] | None:
        """Cheapest mutation chain from *start* to any state meeting *target*; ``[]`` if already
        there, ``None`` if unreachable."""
        key = (start, target, fixed)
        if key in self._paths:
            return self._paths[key]
        start = self.forget(start)
        if self.satisfies(start, target):
            result: list[Edge] | None = []
        else:
            g = self.graph(fixed)
            origin = Spec(start)
            if origin not in g:
                self._explore(g, [origin], dict(zip(self.fixed_urls, fixed)))
            result = self._search(g, origin, target)
        self._paths[key] = result
        return result

    def _search(
        self, g: nx.MultiDiGraph, origin: Spec, target: tuple[tuple[int, Any], ...]
    ) -> list[Edge] | None:
        heap: list[tuple[float, int, tuple[str, ...], int, Spec, tuple[Edge, ...]]] = []
        counter = 0
        heapq.heappush(heap, (0.0, 0, (), counter, origin, ()))
        done: set[Spec] = set()
        while heap:
            cost, hops, names, _, spec, chain = heapq.heappop(heap)
            if spec in done:
                continue
            done.add(spec)
            if self.satisfies(spec.values, target):
                return list(chain)
            for _, nxt, data in g.out_edges(spec, data=True):
                if nxt in done:
                    continue
                m: Mutation = data["mutation"]
                counter += 1
                edge = Edge(m, spec.values, nxt.values)
                heapq.heappush(
                    heap, (cost + m.cost, hops + 1, (*names, m.name), counter, nxt, (*chain, edge))
                )
        return None

    # -- export ------------------------------------------------------------------------------
    def label(self, spec: Spec) -> str:
        lines = [
            f"{self._short(u)}: {_name(v)}"
            for u, v in zip(self.mutators, spec.values)
            if v != self._zero_of(u)
        ]
        for url, equal, value in sorted(spec.constraints, key=lambda c: (c[0], not c[1], _name(c[2]))):
            lines.append(f"{self._short(url)}: {'' if equal else '!'}{_name(value)}")
        return "\n".join(lines) or "(unknown)"

    def _zero_of(self, url: str) -> Any:
        return self.zero[self.index[url]]

    @staticmethod
    def _short(url: str) -> str:
        if url.startswith(model.TYPE_PREFIX):
            url = url[len(model.TYPE_PREFIX) :]
        return url.strip("/")

    def to_json(
        self, g: nx.MultiDiGraph, highlight: list[Edge] | None = None, current: int = -1
    ) -> dict[str, Any]:
        """The dashboard's vis.js shape: nodes ``{id,label,color}``, edges ``{id,from,to,color}``."""
        ids = {spec: i for i, spec in enumerate(sorted(g.nodes, key=self.label))}
        on_path = {(e.source, e.target, e.mutation.name): n for n, e in enumerate(highlight or [])}
        nodes = [
            {"id": ids[s], "label": self.label(s), "color": {"background": "#dddddd", "border": "#888888"}}
            for s in sorted(ids, key=ids.__getitem__)
        ]
        edges = []
        for n, (a, b, key) in enumerate(
            sorted(g.edges(keys=True), key=lambda e: (ids[e[0]], ids[e[1]], e[2]))
        ):
            step = on_path.get((a.values, b.values, key))
            color = "#888888" if step is None else ("#ff0000" if step == current else "#00aa00")
            edges.append({"id": n, "from": ids[a], "to": ids[b], "label": key, "color": {"color": color}})
        return {"nodes": nodes, "edges": edges}

    def to_dot(self, g: nx.MultiDiGraph) -> str:
        data = self.to_json(g)
        lines = ["digraph mutations {", '  node [shape=box, fontname="monospace"];']
        for n in data["nodes"]:
            label = n["label"].replace('"', '\\"').replace("\n", "\\n")
            lines.append(f'  n{n["id"]} [label="{label}"];')
        for e in data["edges"]:
            lines.append(f'  n{e["from"]} -> n{e["to"]} [label="{e["label"]}"];')
        lines.append("}")
        return "\n".join(lines) + "\n"

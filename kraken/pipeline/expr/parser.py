"""Pratt parser from tokens to a small tuple AST: ``(kind, pos, *fields)``.

Kinds: lit var str list tuple map access call rcall dcall dot binop unop match block if case
cond fn capture capref caparg kwlist. Patterns (case/fn/``=``) reuse expression nodes.
"""

from __future__ import annotations

from typing import Any

from kraken.pipeline.expr.lexer import Token, tokenize
from kraken.pipeline.expr.terms import Atom, ExprError

MAX_NESTING = 64

Node = tuple[Any, ...]

# operator -> (left binding power, right binding power)
INFIX: dict[str, tuple[int, int]] = {
    "=": (6, 5),
    "||": (10, 11),
    "or": (10, 11),
    "&&": (20, 21),
    "and": (20, 21),
    "==": (30, 31),
    "!=": (30, 31),
    "===": (30, 31),
    "!==": (30, 31),
    "=~": (30, 31),
    "<": (40, 41),
    ">": (40, 41),
    "<=": (40, 41),
    ">=": (40, 41),
    "|>": (50, 51),
    "in": (55, 56),
    "++": (61, 60),
    "--": (61, 60),
    "<>": (61, 60),
    "..": (61, 60),
    "+": (70, 71),
    "-": (70, 71),
    "*": (80, 81),
    "/": (80, 81),
    "**": (86, 85),
}
UNARY_BP = 90
WORD_OPS = {"and", "or", "in"}


class Parser:
    def __init__(self, source: str) -> None:
        self.src = source
        self.toks = tokenize(source)
        self.i = 0
        self.depth = 0

    # -- token helpers ---------------------------------------------------------------------
    def peek(self, k: int = 0) -> Token:
        j = min(self.i + k, len(self.toks) - 1)
        return self.toks[j]

    def next(self) -> Token:
        tok = self.toks[self.i]
        if self.i < len(self.toks) - 1:
            self.i += 1
        return tok

    def error(self, message: str, tok: Token | None = None) -> ExprError:
        tok = tok or self.peek()
        return ExprError(message, "SyntaxError", tok.pos, self.src)

    def at(self, kind: str, value: Any = None) -> bool:
        tok = self.peek()
        return tok.kind == kind and (value is None or tok.value == value)

    def at_word(self, word: str) -> bool:
        return self.at("ident", word)

    def expect(self, kind: str, value: Any = None) -> Token:
        if not self.at(kind, value):
            tok = self.peek()
            shown = "end of expression" if tok.kind == "eof" else repr(_show(tok))
            raise self.error(f"expected {value or kind}, got {shown}")
        return self.next()

    def skip_seps(self) -> None:
        while self.peek().kind == "sep":
            self.next()

    # -- entry -----------------------------------------------------------------------------
    def parse(self) -> Node:
        self.skip_seps()
        if self.at("eof"):
            raise self.error("empty expression")
        node = self.block(("eof",))
        if not self.at("eof"):
            raise self.error(f"unexpected {_show(self.peek())!r}")
        return node

    def block(self, stops: tuple[str, ...]) -> Node:
        """Statements separated by ``;``/newlines until a stop word or token."""
        pos = self.peek().pos
        exprs = [self.expr(0)]
        while True:
            if not self._at_stop(stops) and not self.at("sep"):
                raise self.error(f"unexpected {_show(self.peek())!r}")
            self.skip_seps()
            if self._at_stop(stops):
                break
            exprs.append(self.expr(0))
        return exprs[0] if len(exprs) == 1 else ("block", pos, exprs)

    def _at_stop(self, stops: tuple[str, ...]) -> bool:
        tok = self.peek()
        if tok.kind == "eof":
            return True
        if tok.kind == "ident" and tok.value in stops:
            return True
        return tok.kind == "punct" and tok.value in stops

    # -- expressions -------------------------------------------------------------------------
    def expr(self, min_bp: int) -> Node:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(f"expression nested deeper than {MAX_NESTING} levels")
        try:
            left = self.prefix()
            while True:
                tok = self.peek()
                if tok.kind == "op":
                    op = tok.value
                elif tok.kind == "ident" and tok.value in WORD_OPS:
                    op = tok.value
                elif (
                    tok.kind == "ident"
                    and tok.value == "not"
                    and self.peek(1).kind == "ident"
                    and self.peek(1).value == "in"
                ):
                    op = "not in"
                else:
                    break
                bp = INFIX.get("in" if op == "not in" else op)
                if bp is None or bp[0] < min_bp:
                    break
                self.next()
                if op == "not in":
                    self.next()
                self.skip_seps()
                right = self.expr(bp[1])
                if op == "=":
                    left = ("match", tok.pos, left, right)
                elif op == "|>":
                    left = self.pipe(left, right, tok)
                else:
                    left = ("binop", tok.pos, op, left, right)
            return left
        finally:
            self.depth -= 1

    def pipe(self, left: Node, right: Node, tok: Token) -> Node:
        kind = right[0]
        if kind == "call":
            return ("call", right[1], right[2], [left, *right[3]])
        if kind == "rcall":
            return ("rcall", right[1], right[2], right[3], [left, *right[4]])
        if kind == "dcall":
            return ("dcall", right[1], right[2], [left, *right[3]])
        if kind == "var":
            return ("call", right[1], right[2], [left])
        raise self.error("the right side of |> must be a function call", tok)

    def prefix(self) -> Node:
        tok = self.next()
        k, v = tok.kind, tok.value
        if k in ("int", "float"):
            return ("lit", tok.pos, v)
        if k == "atom":
            return ("lit", tok.pos, Atom(v))
        if k == "str":
            return self.string(tok)
        if k == "caparg":
            return self.postfix(("caparg", tok.pos, v))
        if k == "op":
            if v in ("-", "+", "!", "^"):
                operand = self.expr(UNARY_BP)
                if (
                    v == "-"
                    and operand[0] == "lit"
                    and isinstance(operand[2], (int, float))
                    and not isinstance(operand[2], bool)
                ):
                    return ("lit", tok.pos, -operand[2])
                return ("unop", tok.pos, v, operand)
            if v == "&":
                return self.capture(tok)
            raise self.error(f"unexpected operator {v!r}", tok)
        if k == "punct":
            if v == "(":
                self.skip_seps()
                inner = self.block((")",))
                self.expect("punct", ")")
                return self.postfix(inner)
            if v == "[":
                return self.postfix(self.list_literal(tok))
            if v == "{":
                items = self.items("}")
                return self.postfix(("tuple", tok.pos, items))
            if v == "%{":
                return self.postfix(self.map_literal(tok))
            raise self.error(f"unexpected {v!r}", tok)
        if k == "ident":
            return self.postfix(self.word(tok))
        if k == "alias":
            return self.postfix(self.remote(tok))
        if k == "kw":
            raise self.error(f"unexpected keyword {v}:", tok)
        if k == "sep":
            raise self.error("unexpected end of line", tok)
        raise self.error("unexpected end of expression", tok)

    def postfix(self, node: Node) -> Node:
        while True:
            tok = self.peek()
            glued = tok.pos > 0 and not self.src[tok.pos - 1].isspace()
            if tok.kind == "punct" and tok.value == "[" and glued:
                self.next()
                self.skip_seps()
                key = self.expr(0)
                self.skip_seps()
                self.expect("punct", "]")
                node = ("access", tok.pos, node, key)
            elif (
                tok.kind == "op"
                and tok.value == "."
                and self.peek(1).kind == "punct"
                and self.peek(1).value == "("
            ):
                self.next()
                self.next()
                args = self.args(")")
                node = ("dcall", tok.pos, node, args)
            elif tok.kind == "op" and tok.value == "." and self.peek(1).kind in ("ident", "alias"):
                self.next()
                name = self.next()
                if self.at("punct", "("):
                    self.next()
                    self.args(")")
                raise ExprError(
                    f"Non local call: {name.value} on an expression", "RuntimeError", tok.pos, self.src
                )
            else:
                return node

    def string(self, tok: Token) -> Node:
        parts: list[Any] = []
        for part in tok.value:
            if isinstance(part, str):
                parts.append(part)
            else:
                tokens, _pos = part
                sub = Parser.__new__(Parser)
                sub.src, sub.toks, sub.i, sub.depth = self.src, tokens, 0, self.depth + 1
                if sub.depth > MAX_NESTING:
                    raise self.error("interpolation nested too deeply", tok)
                sub.skip_seps()
                if sub.at("eof"):
                    parts.append("")
                    continue
                parts.append(sub.block(("eof",)))
                if not sub.at("eof"):
                    raise sub.error(f"unexpected {_show(sub.peek())!r} in interpolation")
        if len(parts) == 1 and isinstance(parts[0], str):
            return ("lit", tok.pos, parts[0])
        return ("str", tok.pos, parts)

    def items(self, closer: str) -> list[Node]:
        out: list[Node] = []
        self.skip_seps()
        while not self.at("punct", closer):
            out.append(self.expr(0))
            self.skip_seps()
            if not self.at("punct", closer):
                self.expect("punct", ",")
                self.skip_seps()
        self.next()
        return out

    def args(self, closer: str) -> list[Node]:
        """Call arguments; trailing ``key: value`` pairs become one keyword-list argument."""
        out: list[Node] = []
        kws: list[tuple[str, Node]] = []
        self.skip_seps()
        while not self.at("punct", closer):
            if self.at("kw"):
                kw = self.next()
                self.skip_seps()
                kws.append((kw.value, self.expr(0)))
            elif kws:
                raise self.error("keyword arguments must come last")
            else:
                out.append(self.expr(0))
            self.skip_seps()
            if not self.at("punct", closer):
                self.expect("punct", ",")
                self.skip_seps()
        self.next()
        if kws:
            out.append(("kwlist", kws[0][1][1], kws))
        return out

    def list_literal(self, tok: Token) -> Node:
        items: list[Node] = []
        tail = None
        self.skip_seps()
        while not self.at("punct", "]"):
            if self.at("kw"):
                kw = self.next()
                self.skip_seps()
                value = self.expr(0)
                items.append(("tuple", kw.pos, [("lit", kw.pos, Atom(kw.value)), value]))
            else:
                items.append(self.expr(0))
            self.skip_seps()
            if self.at("op", "|"):
                self.next()
                self.skip_seps()
                tail = self.expr(0)
                self.skip_seps()
                self.expect("punct", "]")
                return ("list", tok.pos, items, tail)
            if not self.at("punct", "]"):
                self.expect("punct", ",")
                self.skip_seps()
        self.next()
        return ("list", tok.pos, items, tail)

    def map_literal(self, tok: Token) -> Node:
        pairs: list[tuple[Node, Node]] = []
        base = None
        self.skip_seps()
        if not self.at("punct", "}") and not self.at("kw"):
            first = self.expr(0)
            self.skip_seps()
            if self.at("op", "|"):
                self.next()
                self.skip_seps()
                base = first
            else:
                self.expect("op", "=>")
                self.skip_seps()
                pairs.append((first, self.expr(0)))
                self.skip_seps()
                if not self.at("punct", "}"):
                    self.expect("punct", ",")
                    self.skip_seps()
        while not self.at("punct", "}"):
            if self.at("kw"):
                kw = self.next()
                self.skip_seps()
                pairs.append((("lit", kw.pos, Atom(kw.value)), self.expr(0)))
            else:
                key = self.expr(0)
                self.skip_seps()
                self.expect("op", "=>")
                self.skip_seps()
                pairs.append((key, self.expr(0)))
            self.skip_seps()
            if not self.at("punct", "}"):
                self.expect("punct", ",")
                self.skip_seps()
        self.next()
        return ("map", tok.pos, pairs, base)

    def word(self, tok: Token) -> Node:
        v = tok.value
        if v == "nil":
            return ("lit", tok.pos, None)
        if v == "true":
            return ("lit", tok.pos, True)
        if v == "false":
            return ("lit", tok.pos, False)
        if v == "fn":
            return self.fn(tok)
        if v in ("not",):
            return ("unop", tok.pos, "not", self.expr(UNARY_BP))
        if v in ("do", "end", "else", "after", "when", "and", "or", "in"):
            raise self.error(f"unexpected reserved word {v!r}", tok)
        if v in ("case", "cond", "if", "unless"):
            return self.special(tok)
        if self.at("punct", "(") and self.peek().pos == tok.pos + len(v):
            self.next()
            return ("call", tok.pos, v, self.args(")"))
        return ("var", tok.pos, v)

    def special(self, tok: Token) -> Node:
        v = tok.value
        if self.at("punct", "("):
            self.next()
            args = self.args(")")
        elif v == "cond" or self.at_word("do"):
            args = []
        else:
            args = self.bare_args()
        if self.at_word("do"):
            self.next()
            if v in ("if", "unless"):
                self.skip_seps()
                then = self.block(("else", "end"))
                other: Node | None = None
                if self.at_word("else"):
                    self.next()
                    self.skip_seps()
                    other = self.block(("end",))
                self.expect("ident", "end")
                args.append(("kwlist", tok.pos, [("do", then)] + ([("else", other)] if other else [])))
            else:
                clauses = self.clauses(v)
                if v == "case":
                    if len(args) != 1:
                        raise self.error("case expects one subject", tok)
                    return ("case", tok.pos, args[0], clauses)
                return ("cond", tok.pos, [(c[0][0], c[2]) for c in clauses])
        if v in ("if", "unless"):
            if len(args) != 2 or args[1][0] != "kwlist":
                raise self.error(f"{v} expects a condition and do:/else:", tok)
            kws = dict(args[1][2])
            if "do" not in kws or set(kws) - {"do", "else"}:
                raise self.error(f"{v} expects do: and an optional else:", tok)
            do_block: Node | None = kws["do"]
            else_block: Node | None = kws.get("else")
            if v == "unless":
                do_block, else_block = else_block, do_block
            return ("if", tok.pos, args[0], do_block, else_block)
        raise self.error(f"{v} expects a do ... end block", tok)

    def bare_args(self) -> list[Node]:
        out: list[Node] = []
        kws: list[tuple[str, Node]] = []
        while True:
            if self.at("kw"):
                kw = self.next()
                self.skip_seps()
                kws.append((kw.value, self.expr(0)))
            else:
                out.append(self.expr(0))
            if not self.at("punct", ","):
                break
            self.next()
            self.skip_seps()
        if kws:
            out.append(("kwlist", kws[0][1][1], kws))
        return out

    def clauses(self, owner: str) -> list[tuple[list[Node], Node | None, Node]]:
        """``head -> body`` clauses up to ``end``; *owner* is case, cond or fn."""
        out: list[tuple[list[Node], Node | None, Node]] = []
        self.skip_seps()
        while not self.at_word("end"):
            if self.at("eof"):
                raise self.error(f"missing terminator: end (for {owner})")
            heads: list[Node] = []
            if not self.at("op", "->"):
                heads.append(self.expr(0))
                while owner == "fn" and self.at("punct", ","):
                    self.next()
                    heads.append(self.expr(0))
            guard = None
            if self.at_word("when"):
                self.next()
                guard = self.expr(0)
            self.expect("op", "->")
            self.skip_seps()
            body = [self.expr(0)]
            while True:
                if not (self.at("sep") or self.at_word("end") or self.at("eof") or self._clause_ahead()):
                    raise self.error(f"unexpected {_show(self.peek())!r}")
                self.skip_seps()
                if self.at_word("end") or self.at("eof") or self._clause_ahead():
                    break
                body.append(self.expr(0))
            out.append((heads, guard, body[0] if len(body) == 1 else ("block", body[0][1], body)))
        self.next()
        if not out:
            raise self.error(f"{owner} needs at least one clause")
        return out

    def _clause_ahead(self) -> bool:
        depth = 0
        for tok in self.toks[self.i :]:
            if tok.kind == "punct":
                if tok.value in ("(", "[", "{", "%{"):
                    depth += 1
                elif tok.value in (")", "]", "}"):
                    depth -= 1
            elif tok.kind == "ident" and tok.value in ("fn", "do"):
                depth += 1
            elif tok.kind == "ident" and tok.value == "end":
                if depth == 0:
                    return False
                depth -= 1
            elif depth == 0 and tok.kind == "sep":
                return False
            elif depth == 0 and tok.kind == "op" and tok.value == "->":
                return True
            elif tok.kind == "eof":
                return False
        return False

    def fn(self, tok: Token) -> Node:
        clauses = self.clauses("fn")
        arities = {len(c[0]) for c in clauses}
        if len(arities) != 1:
            raise self.error("all fn clauses must take the same number of arguments", tok)
        return ("fn", tok.pos, clauses)

    def capture(self, tok: Token) -> Node:
        if self.at("alias") or (self.at("ident") and self.peek(1).kind == "op" and self.peek(1).value == "/"):
            start = self.i
            mod = None
            if self.at("alias"):
                parts = [self.next().value]
                while self.at("op", ".") and self.peek(1).kind == "alias":
                    self.next()
                    parts.append(self.next().value)
                if self.at("op", ".") and self.peek(1).kind == "ident":
                    self.next()
                    mod = ".".join(parts)
                else:
                    self.i = start
                    return self._capture_expr(tok)
            name = self.expect("ident").value
            if self.at("op", "/") and self.peek(1).kind == "int":
                self.next()
                arity = self.next().value
                return ("capref", tok.pos, mod, name, arity)
            self.i = start
        return self._capture_expr(tok)

    def _capture_expr(self, tok: Token) -> Node:
        body = self.expr(7)
        arity = _max_caparg(body)
        if arity == 0:
            raise self.error("invalid capture: the body uses no &1", tok)
        return ("capture", tok.pos, body, arity)

    def remote(self, tok: Token) -> Node:
        parts = [tok.value]
        while self.at("op", ".") and self.peek(1).kind == "alias":
            self.next()
            parts.append(self.next().value)
        mod = ".".join(parts)
        if self.at("op", ".") and self.peek(1).kind == "ident":
            self.next()
            name = self.next()
            args: list[Node] = []
            if self.at("punct", "(") and self.peek().pos == name.pos + len(name.value):
                self.next()
                args = self.args(")")
            return ("rcall", tok.pos, mod, name.value, args)
        return ("lit", tok.pos, Atom("Elixir." + mod))


def _max_caparg(node: Any) -> int:
    if isinstance(node, tuple) and node and isinstance(node[0], str):
        if node[0] == "caparg":
            return node[2]
        if node[0] == "capture":
            return 0
        return max((_max_caparg(x) for x in node[2:]), default=0)
    if isinstance(node, (list, tuple)):
        return max((_max_caparg(x) for x in node), default=0)
    return 0


def _show(tok: Token) -> str:
    if tok.kind == "str":
        return '"..."'
    if tok.kind == "kw":
        return f"{tok.value}:"
    if tok.kind == "sep":
        return "end of line" if tok.value == "\n" else ";"
    return str(tok.value)


def parse(source: str) -> Node:
    return Parser(source).parse()

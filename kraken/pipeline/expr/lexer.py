"""Tokenizer for the Elixir subset of pipeline expressions.

Strings in ``"..."`` or ``'...'`` (both are binaries here) may hold ``#{...}`` interpolations,
whose tokens are nested inside the string token. ``;`` and newlines become ``sep`` tokens,
except where Elixir would continue the expression (after an operator, comma or opener).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kraken.pipeline.expr.terms import ExprError

MAX_SOURCE = 20_000
DIGITS = "0123456789"

OPERATORS = sorted(
    [
        "===",
        "!==",
        "|>",
        "<>",
        "++",
        "--",
        "==",
        "!=",
        "<=",
        ">=",
        "&&",
        "||",
        "->",
        "=>",
        "=~",
        "..",
        "**",
        "::",
        "+",
        "-",
        "*",
        "/",
        "<",
        ">",
        "=",
        "!",
        "&",
        "|",
        ".",
        "^",
        "\\\\",
    ],
    key=len,
    reverse=True,
)
PUNCT = "()[]{},"
_CONTINUE_AFTER = set(OPERATORS) - {"."} | {",", "(", "[", "{", "%{"}
_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "0": "\0",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "#": "#",
    "e": "\x1b",
    "s": " ",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
}


@dataclass(frozen=True)
class Token:
    kind: str  # int float str atom ident alias kw op punct sep caparg eof
    value: Any
    pos: int


def _syntax(message: str, pos: int, source: str) -> ExprError:
    return ExprError(message, "SyntaxError", pos, source)


class Lexer:
    def __init__(self, source: str) -> None:
        if len(source) > MAX_SOURCE:
            raise ExprError(f"expression longer than {MAX_SOURCE} characters", "LimitError", 0, source[:200])
        self.src = source
        self.i = 0

    def tokenize(self) -> list[Token]:
        tokens = self._until(None)
        tokens.append(Token("eof", None, len(self.src)))
        return tokens

    def _push(self, out: list[Token], tok: Token) -> None:
        if tok.kind == "sep":
            last = out[-1] if out else None
            if (
                last is None
                or last.kind == "sep"
                or (last.kind in ("op", "punct") and last.value in _CONTINUE_AFTER)
            ):
                return
            if out[-1].kind == "ident" and out[-1].value == "do":
                return
        out.append(tok)

    def _until(self, closer: str | None) -> list[Token]:
        """Tokens up to the end (or up to the ``}`` closing an interpolation)."""
        src, depth = self.src, 0
        out: list[Token] = []
        while True:
            if self.i >= len(src):
                if closer is not None:
                    raise _syntax("missing terminator: } of string interpolation", self.i, src)
                return out
            c = src[self.i]
            start = self.i
            if c in " \t\r":
                self.i += 1
            elif c == "\n" or c == ";":
                self.i += 1
                self._push(out, Token("sep", c, start))
            elif c == "#":
                end = src.find("\n", self.i)
                self.i = len(src) if end < 0 else end
            elif c in DIGITS:
                out.append(self._number())
            elif c in "\"'":
                out.append(self._string(c))
            elif c == ":" and self.i + 1 < len(src) and (src[self.i + 1].isalpha() or src[self.i + 1] == "_"):
                self.i += 1
                name = self._word()
                out.append(Token("atom", name, start))
            elif c == ":" and self.i + 1 < len(src) and src[self.i + 1] in "\"'":
                self.i += 1
                tok = self._string(src[self.i])
                if any(not isinstance(p, str) for p in tok.value):
                    raise _syntax("interpolation in an atom", start, src)
                out.append(Token("atom", "".join(tok.value), start))
            elif c.isalpha() or c == "_":
                name = self._word()
                nxt = src[self.i] if self.i < len(src) else ""
                after = src[self.i + 1] if self.i + 1 < len(src) else ""
                if nxt == ":" and after != ":" and (after == "" or after in " \t\n\r"):
                    self.i += 1
                    out.append(Token("kw", name, start))
                elif name[0].isupper():
                    out.append(Token("alias", name, start))
                else:
                    out.append(Token("ident", name, start))
            elif c == "&" and self.i + 1 < len(src) and src[self.i + 1] in DIGITS:
                self.i += 1
                j = self.i
                while self.i < len(src) and src[self.i] in DIGITS:
                    self.i += 1
                out.append(Token("caparg", int(src[j : self.i][:3]), start))
            elif c == "%" and src.startswith("%{", self.i):
                self.i += 2
                depth += 1
                out.append(Token("punct", "%{", start))
            elif c == "}" and closer == "}" and depth == 0:
                self.i += 1
                return out
            elif c in PUNCT:
                if c == "{":
                    depth += 1
                elif c == "}":
                    depth -= 1
                self.i += 1
                out.append(Token("punct", c, start))
            else:
                for op in OPERATORS:
                    if src.startswith(op, self.i):
                        self.i += len(op)
                        out.append(Token("op", op, start))
                        break
                else:
                    raise _syntax(f"unexpected character {c!r}", start, src)

    def _word(self) -> str:
        src, j = self.src, self.i
        while self.i < len(src) and (src[self.i].isalnum() or src[self.i] == "_"):
            self.i += 1
        if self.i < len(src) and src[self.i] in "?!":
            self.i += 1
        return src[j : self.i]

    def _number(self) -> Token:
        src, start = self.src, self.i
        if src.startswith(("0x", "0b", "0o"), self.i):
            base = {"x": 16, "b": 2, "o": 8}[src[self.i + 1]]
            self.i += 2
            j = self.i
            while self.i < len(src) and (src[self.i].isalnum() or src[self.i] == "_"):
                self.i += 1
            try:
                return Token("int", int(src[j : self.i].replace("_", ""), base), start)
            except ValueError:
                raise _syntax("invalid number", start, src) from None
        while self.i < len(src) and (src[self.i] in DIGITS or src[self.i] == "_"):
            self.i += 1
        is_float = False
        if self.i + 1 < len(src) and src[self.i] == "." and src[self.i + 1] in DIGITS:
            is_float = True
            self.i += 1
            while self.i < len(src) and (src[self.i] in DIGITS or src[self.i] == "_"):
                self.i += 1
            if self.i < len(src) and src[self.i] in "eE":
                j = self.i + 1
                if j < len(src) and src[j] in "+-":
                    j += 1
                if j < len(src) and src[j] in DIGITS:
                    self.i = j
                    while self.i < len(src) and src[self.i] in DIGITS:
                        self.i += 1
        text = src[start : self.i].replace("_", "")
        if len(text) > 400:
            raise ExprError("number literal too long", "LimitError", start, src)
        if is_float:
            value = float(text)
            if value in (float("inf"), float("-inf")):
                raise _syntax("float literal out of range", start, src)
            return Token("float", value, start)
        return Token("int", int(text), start)

    def _string(self, quote: str) -> Token:
        src, start = self.src, self.i
        self.i += 1
        parts: list[Any] = []
        buf: list[str] = []
        while True:
            if self.i >= len(src):
                raise _syntax(f"missing terminator: {quote} (string starting here)", start, src)
            c = src[self.i]
            if c == quote:
                self.i += 1
                break
            if c == "\\":
                if self.i + 1 >= len(src):
                    raise _syntax("unfinished escape", self.i, src)
                e = src[self.i + 1]
                self.i += 2
                if e == "u" and src.startswith("{", self.i):
                    end = src.find("}", self.i)
                    try:
                        buf.append(chr(int(src[self.i + 1 : end], 16)))
                    except (ValueError, OverflowError):
                        raise _syntax("invalid \\u escape", self.i, src) from None
                    self.i = end + 1
                elif e == "u":
                    try:
                        buf.append(chr(int(src[self.i : self.i + 4], 16)))
                    except ValueError:
                        raise _syntax("invalid \\u escape", self.i, src) from None
                    self.i += 4
                else:
                    buf.append(_ESCAPES.get(e, e))
            elif c == "#" and src.startswith("#{", self.i):
                if buf:
                    parts.append("".join(buf))
                    buf = []
                pos = self.i
                self.i += 2
                inner = self._until("}")
                inner.append(Token("eof", None, self.i - 1))
                parts.append((inner, pos))
            else:
                buf.append(c)
                self.i += 1
        if buf or not parts:
            parts.append("".join(buf))
        return Token("str", parts, start)


def tokenize(source: str) -> list[Token]:
    return Lexer(source).tokenize()

"""Monticello's s-expression format, as used by the `version` and `package` members.

    >>> parse("(name 'Foo-jd.1' ancestors ())")
    ['name', 'Foo-jd.1', 'ancestors', []]

Bare words become `Symbol`, quoted strings `str` (with `''` unescaped), lists `list`.
"""

import re


class Symbol(str):
    """A bare word such as `name` or `ancestors`."""

    __slots__ = ()


class SexprError(ValueError):
    pass


_TOKEN = re.compile(r"(\()|(\))|'((?:[^']|'')*)'|([^\s()']+)|(\S)")


def decode(data: bytes) -> str:
    """UTF-8, falling back to latin-1 as older Squeak images wrote."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def parse(text: str):
    """Parse one s-expression; trailing white space only is allowed."""
    stack = [[]]
    symbols = {}  # one object per distinct word: a long history repeats the same few keys
    for match in _TOKEN.finditer(text):  # not findall: no list of every token of a large member
        open_, close, string, word, stray = match.groups()
        if open_:
            stack.append([])
        elif close:
            if len(stack) == 1:
                raise SexprError("unbalanced ')'")
            done = stack.pop()
            stack[-1].append(done)
        elif stray:
            raise SexprError("unterminated string" if stray == "'" else f"unexpected character {stray!r}")
        elif word:
            symbol = symbols.get(word)
            if symbol is None:
                symbol = symbols[word] = Symbol(word)
            stack[-1].append(symbol)
        else:
            stack[-1].append(string.replace("''", "'"))
    if len(stack) != 1:
        raise SexprError("unbalanced '(': the text ends inside a list")
    if len(stack[0]) != 1:
        raise SexprError(f"expected one expression, found {len(stack[0])}")
    return stack[0][0]


def as_pairs(expression) -> dict:
    """Read a `(key value key value ...)` list into a dict."""
    if not isinstance(expression, list) or len(expression) % 2:
        raise SexprError("expected a list of key/value pairs")
    pairs = {}
    for key, value in zip(expression[0::2], expression[1::2]):
        if not isinstance(key, Symbol):
            raise SexprError(f"expected a key, found {key!r}")
        pairs[str(key)] = value
    return pairs


def quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"

"""CSS inlining once per message shape, not once per message, with output identical to ``css_inline``.

The HTML environment's ``finalize`` hook (:func:`finalize`) takes every value a template outputs out
of the page while collecting (:func:`start_collecting`), leaving one :data:`MARK` in its place, so a
render returns the *shape* of the message: layout, copy and control-flow outcome with the customer's
values cut out. A shape is inlined once (:func:`compile_shape`): its marks become numbered
placeholders, ``css_inline`` runs on that, and the result is split around the placeholders. Each later
message of the same shape is that split output joined with its values, escaped the way
``css_inline``'s serializer would have written them (text: ``&``, ``<``, ``>`` escaped; attributes:
``&`` and ``"`` escaped; both: ``&nbsp;`` and newlines normalised).

A shape is trusted only after the fast result equalled ``css_inline.inline`` of the real page twice:
for the message that introduced it and for a probe value carrying every character the serializer
rewrites. A shape that fails (a value inside a ``style`` attribute or a ``<style>`` element, a selector
that depends on a value, a bare ``&`` before a value...) is remembered as such and its messages are
inlined in full, as before. Values the page's structure may depend on (empty, whitespace at either
end, NUL, surrogates) and safe markup stay in the shape instead of being cut out.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import css_inline
from markupsafe import escape

MARK = "\ue000"  # a private-use character: one per value cut out of the page
_END = "\ue001"
_PLACEHOLDER = re.compile(f"{MARK}([0-9]+){_END}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_OPEN_REFERENCE = re.compile(r"&[#0-9A-Za-z]*\Z")  # a character reference the next value could complete
PROBE = "x\r\n &<>\"'\u00a0y\rz &amp; q"  # every character the serializer rewrites, inside a value


class _Collector(threading.local):
    values: list[str] | None = None


_COLLECTOR = _Collector()


def finalize(value: Any) -> Any:
    """The HTML environment's finalize hook: while collecting, cut plain values out of the page.

    A value is collected as its ``str`` (what Jinja escapes); markup and values the page's structure
    could depend on are returned unchanged, so Jinja writes them into the shape as usual.
    """
    values = _COLLECTOR.values
    if values is None:
        return value
    if type(value) is not str:
        if hasattr(value, "__html__"):
            return value
        value = str(value)
    if not value or value[0].isspace() or value[-1].isspace() or "\x00" in value:
        return value
    if not value.isascii() and _SURROGATE.search(value):
        return value
    values.append(value)
    return MARK  # escaped by Jinja, it stays itself


def start_collecting() -> list[str]:
    """Collect the values rendered from now on (in output order) into the returned list."""
    values: list[str] = []
    _COLLECTOR.values = values
    return values


def stop_collecting() -> None:
    """Render normally again."""
    _COLLECTOR.values = None


_TEXT_SPECIAL = re.compile("[&<>\u00a0\r]")
_ATTRIBUTE_SPECIAL = re.compile('[&"\u00a0\r]')
_ANY_SPECIAL = re.compile('[&<>"\u00a0\r]')  # nothing to rewrite, wherever the values sit


def _text(value: str) -> str:
    """A value in a text node, as the serializer writes it."""
    if not _TEXT_SPECIAL.search(value):
        return value
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return value.replace("\u00a0", "&nbsp;").replace("\r\n", "\n").replace("\r", "\n")


def _attribute(value: str) -> str:
    """A value in a (double-quoted) attribute value, as the serializer writes it."""
    if not _ATTRIBUTE_SPECIAL.search(value):
        return value
    value = value.replace("&", "&amp;").replace('"', "&quot;")
    return value.replace("\u00a0", "&nbsp;").replace("\r\n", "\n").replace("\r", "\n")


@dataclass(frozen=True)
class Shape:
    """The inlined output of one shape, split around its values."""

    pieces: tuple[str, ...]  # len(slots) + 1 pieces of inlined HTML
    slots: tuple[int, ...]  # which value goes after pieces[k] (the serializer may move text)
    in_attribute: tuple[bool, ...]
    in_order: bool  # slots == 0, 1, 2...
    pattern: str  # the pieces joined by %s (their own % doubled), for values in order

    def fill(self, values: Sequence[str]) -> str:
        """The inlined HTML of a page of this shape with these values."""
        pieces = self.pieces
        if self.in_order and not _ANY_SPECIAL.search("".join(values)):
            return self.pattern % tuple(values)
        out = [pieces[0]]
        for k, slot in enumerate(self.slots):
            out.append(_attribute(values[slot]) if self.in_attribute[k] else _text(values[slot]))
            out.append(pieces[k + 1])
        return "".join(out)


def page(shape: str, values: Sequence[str]) -> str:
    """The real page: ``shape`` with its marks replaced by the escaped ``values``."""
    parts = shape.split(MARK)
    out = [parts[0]]
    for value, part in zip(values, parts[1:], strict=True):
        out.append(str(escape(value)))
        out.append(part)
    return "".join(out)


def _inside_tag(html: str, end: int) -> bool:
    return html.rfind("<", 0, end) > html.rfind(">", 0, end)


def compile_shape(shape: str, values: Sequence[str]) -> Shape | None:
    """Inline ``shape`` once; ``None`` when the fast path could differ from inlining each page (or
    ``css_inline`` rejects the placeholders or the probe: each page then gets inlined, and rejected, as
    it would have been)."""
    try:
        return _compile_shape(shape, values)
    except css_inline.InlineError:
        return None


def _compile_shape(shape: str, values: Sequence[str]) -> Shape | None:
    parts = shape.split(MARK)
    if any(_OPEN_REFERENCE.search(p) for p in parts[:-1]):
        return None
    numbered = parts[0] + "".join(f"{MARK}{i}{_END}{p}" for i, p in enumerate(parts[1:]))
    inlined = css_inline.inline(numbered)
    pieces, slots, in_attribute, start = [], [], [], 0
    for match in _PLACEHOLDER.finditer(inlined):
        pieces.append(inlined[start : match.start()])
        slots.append(int(match.group(1)))
        in_attribute.append(_inside_tag(inlined, match.start()))
        start = match.end()
    pieces.append(inlined[start:])
    if sorted(slots) != list(range(len(values))) or MARK in "".join(pieces) or _END in "".join(pieces):
        return None
    pattern = "%s".join(p.replace("%", "%%") for p in pieces)
    compiled = Shape(tuple(pieces), tuple(slots), tuple(in_attribute), slots == sorted(slots), pattern)
    probe = [PROBE] * len(values)
    for trial in (values, probe):
        if compiled.fill(trial) != css_inline.inline(page(shape, trial)):
            return None
    return compiled

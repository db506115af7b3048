"""Rendering: sandboxed Jinja, compiled once per run, persona variants, shared layouts.

Each part is compiled as one flattened template (compose/flatten.py) and its CSS is inlined once per
message shape (compose/inline.py); the output is the same as rendering the template through its layout
and running ``css_inline`` on every message, which is what tests/compose/test_render_identity.py checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import css_inline
from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateError, TemplateSyntaxError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from loyalflow.compose.flatten import captures, flatten
from loyalflow.compose.inline import MARK, Shape, collecting, compile_shape, finalize, page
from loyalflow.errors import RenderError
from loyalflow.spec import PARTS_BY_CHANNEL

SMS_STOP_TEXT = "Reply STOP to opt out."
MAX_SHAPES = 256  # per part; a part whose shape varies more than this is inlined per message
_WS = re.compile(r"\s+")
_DICT_ATTRIBUTES = frozenset(dir(dict))


def greeting(first_name: Any, fallback: str = "Hi there") -> str:
    """``Hi Ana`` for a usable first name, a friendly fallback otherwise (never ``Hi ,``)."""
    if first_name is None or isinstance(first_name, Undefined):
        return fallback
    name = _WS.sub(" ", str(first_name)).strip()
    return f"Hi {name}" if name and name.lower() not in {"nan", "none", "null"} else fallback


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with ``mapping.key`` on a plain dict looked up without raising first."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Same result as the sandbox's: a dict's own attributes first, then its items."""
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


def _environment(templates_dir: Path, autoescape: bool) -> ImmutableSandboxedEnvironment:
    env = _Sandbox(
        loader=FileSystemLoader(str(templates_dir)),
        undefined=StrictUndefined,
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        cache_size=1000,
        finalize=finalize if autoescape else None,
    )
    env.globals["greeting"] = greeting
    env.filters["money"] = lambda v, cur="$": f"{cur}{float(v):,.2f}"
    return env


@dataclass
class _Part:
    """A compiled part; for HTML, whether its values are cut out and its inlined shapes."""

    template: Template
    cut: bool = False
    shapes: dict[str, Shape | None] = field(default_factory=dict)

    def html(self, context: dict[str, Any]) -> str:
        """The rendered, CSS-inlined HTML (the same as ``css_inline.inline`` of the plain render)."""
        if not self.cut:
            return css_inline.inline(self.template.render(context))
        with collecting() as values:
            shape = self.template.render(context)
        if shape.count(MARK) != len(values):  # the copy itself holds the mark character
            return css_inline.inline(self.template.render(context))
        if shape not in self.shapes:
            if len(self.shapes) >= MAX_SHAPES:
                return css_inline.inline(page(shape, values))
            self.shapes[shape] = compile_shape(shape, values)
        compiled = self.shapes[shape]
        if compiled is None:
            return css_inline.inline(page(shape, values))
        return compiled.fill(values)


def _compile(env: ImmutableSandboxedEnvironment, name: str) -> _Part:
    tree = flatten(env, name)
    if tree is None:
        return _Part(env.get_template(name))
    filename = env.loader.get_source(env, name)[1]  # type: ignore[union-attr]
    code = env.compile(tree, name, filename)
    template = env.template_class.from_code(env, code, env.make_globals(None), None)
    return _Part(template, cut=env.autoescape is True and not captures(tree))


def _error(name: str, exc: TemplateError) -> RenderError:
    where = exc.name if isinstance(exc, TemplateSyntaxError) and exc.name else name
    line = getattr(exc, "lineno", None)
    return RenderError(f"templates/{where}{f':{line}' if line else ''}: {exc}")


class Renderer:
    """Renders a step's parts for one customer; templates are compiled once and reused."""

    def __init__(self, templates_dir: Path):
        self.templates_dir = templates_dir
        self.html_env = _environment(templates_dir, autoescape=True)
        self.text_env = _environment(templates_dir, autoescape=False)
        self._exists = lru_cache(maxsize=4096)(lambda name: (templates_dir / name).is_file())
        self._parts: dict[str, _Part] = {}

    def template_name(self, campaign: str, step: str, part: str, persona: str | None) -> str:
        """The persona's variant of a part when it exists, else the default one."""
        if persona:
            variant = f"{campaign}/{step}.{persona}.{part}.j2"
            if self._exists(variant):
                return variant
        return f"{campaign}/{step}.{part}.j2"

    def compile_all(self, campaign: str, step: str, channel: str) -> None:
        """Compile every part and persona variant of a step now, so syntax errors surface before sending."""
        for path in sorted((self.templates_dir / campaign).glob(f"{step}.*.j2")):
            name = f"{campaign}/{path.name}"
            try:
                self._part(name)
            except TemplateError as exc:
                raise _error(name, exc) from exc

    def _part(self, name: str) -> _Part:
        part = self._parts.get(name)
        if part is None:
            env = self.html_env if name.endswith(".html.j2") else self.text_env
            part = self._parts[name] = _compile(env, name)
        return part

    def render(self, campaign: str, step: str, channel: str, context: dict[str, Any]) -> dict[str, str]:
        """Render every part of ``channel`` (email: subject, html, txt; sms: sms)."""
        persona = (context.get("customer") or {}).get("persona")
        out: dict[str, str] = {}
        for part in PARTS_BY_CHANNEL[channel]:
            name = self.template_name(campaign, step, part, persona)
            try:
                compiled = self._part(name)
                out[part] = compiled.html(context) if part == "html" else compiled.template.render(context)
            except TemplateError as exc:
                raise _error(name, exc) from exc
        if "subject" in out:
            out["subject"] = _WS.sub(" ", out["subject"]).strip()
            if not out["subject"]:
                raise RenderError(f"templates/{campaign}/{step}.subject.j2: rendered an empty subject")
        if "sms" in out:
            out["sms"] = _WS.sub(" ", out["sms"]).strip()
            if "STOP" not in out["sms"]:
                out["sms"] = f"{out['sms']} {SMS_STOP_TEXT}"
        return out

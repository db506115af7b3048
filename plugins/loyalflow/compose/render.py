"""Rendering: sandboxed Jinja, compiled once per run, persona variants, shared layouts.

Each part is compiled as one flattened template with the run's constants folded in, and its CSS is
inlined once per message shape (compose/parts.py); the output is the same as rendering the template
through its layout and running ``css_inline`` on every message (tests/compose/test_render_identity.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import css_inline
from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
    Undefined,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment

from loyalflow.compose.inline import finalize
from loyalflow.compose.parts import Part, compile_part
from loyalflow.errors import RenderError
from loyalflow.spec import PARTS_BY_CHANNEL

SMS_STOP_TEXT = "Reply STOP to opt out."
MAX_BOUND = 16  # sets of run constants kept compiled (see Renderer.bind)
_DICT_ATTRIBUTES = frozenset(dir(dict))


def squash(text: str) -> str:
    """Runs of whitespace as one space, none at the ends (``str.split`` and ``\\s`` agree on whitespace)."""
    return " ".join(text.split())


def greeting(first_name: Any, fallback: str = "Hi there") -> str:
    """``Hi Ana`` for a usable first name, a friendly fallback otherwise (never ``Hi ,``)."""
    if first_name is None or isinstance(first_name, Undefined):
        return fallback
    name = squash(str(first_name))
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


def _error(name: str, exc: TemplateError) -> RenderError:
    where = exc.name if isinstance(exc, TemplateSyntaxError) and exc.name else name
    line = getattr(exc, "lineno", None)
    return RenderError(f"templates/{where}{f':{line}' if line else ''}: {exc}")


class Templates:
    """The compiled parts for one set of run constants (see :meth:`Renderer.bind`)."""

    def __init__(self, renderer: Renderer, constants: Mapping[str, Any]):
        self.renderer = renderer
        self.constants = dict(constants)
        self._parts: dict[str, Part] = {}
        self._chosen: dict[tuple[str, str, str, str | None], list[tuple[str, str, Part]]] = {}
        self._reads: dict[tuple[str, str, str, str | None], frozenset[str] | None] = {}

    def refresh(self) -> None:
        """Forget every compiled part when a template file changed since it was compiled."""
        if any(part.stale() for part in self._parts.values()):
            self._parts.clear()
            self._chosen.clear()
            self._reads.clear()

    def part(self, name: str) -> Part:
        """The compiled part ``name`` (``campaign/step[.persona].part.j2``)."""
        part = self._parts.get(name)
        if part is None:
            r = self.renderer
            env = r.html_env if name.endswith(".html.j2") else r.text_env
            part = self._parts[name] = compile_part(env, name, self.constants)
        return part

    def _parts_of(
        self, campaign: str, step: str, channel: str, persona: str | None
    ) -> list[tuple[str, str, Part]]:
        key = (campaign, step, channel, persona)
        found = self._chosen.get(key)
        if found is None:
            found = []
            for part in PARTS_BY_CHANNEL[channel]:
                name = self.renderer.template_name(campaign, step, part, persona)
                try:
                    found.append((part, name, self.part(name)))
                except TemplateError as exc:
                    raise _error(name, exc) from exc
            self._chosen[key] = found
        return found

    def reads(self, campaign: str, step: str, channel: str, persona: str | None) -> frozenset[str] | None:
        """The context names the parts of ``channel`` read, or ``None`` when that is not known."""
        key = (campaign, step, channel, persona)
        if key not in self._reads:
            found: set[str] | None = set()
            for _, _, part in self._parts_of(campaign, step, channel, persona):
                found = None if found is None or part.reads is None else found | part.reads
            self._reads[key] = None if found is None else frozenset(found)
        return self._reads[key]

    def render(
        self, campaign: str, step: str, channel: str, context: dict[str, Any], *, scoped: bool = False
    ) -> dict[str, str]:
        """Render every part of ``channel`` (email: subject, html, txt; sms: sms).

        ``context`` must hold the bound constants unchanged (a ContextBuilder's contexts do); ``scoped``
        says it also holds :attr:`Renderer.globals` already (``ContextBuilder(base=...)``).
        """
        persona = (context.get("customer") or {}).get("persona")
        scope = context if scoped else {**self.renderer.globals, **context}
        out: dict[str, str] = {}
        for part, name, compiled in self._parts_of(campaign, step, channel, persona):
            try:
                out[part] = compiled.html(scope) if part == "html" else compiled.text(scope)
            except TemplateError as exc:
                raise _error(name, exc) from exc
            except css_inline.InlineError as exc:  # e.g. a value that makes a style attribute invalid
                raise RenderError(f"templates/{name}: CSS inlining failed: {exc}") from exc
        if "subject" in out:
            out["subject"] = squash(out["subject"])
            if not out["subject"]:
                raise RenderError(f"templates/{campaign}/{step}.subject.j2: rendered an empty subject")
        if "sms" in out:
            out["sms"] = squash(out["sms"])
            if "STOP" not in out["sms"]:
                out["sms"] = f"{out['sms']} {SMS_STOP_TEXT}"
        return out


class Renderer:
    """Renders a step's parts for one customer; templates are compiled once and reused."""

    def __init__(self, templates_dir: Path):
        self.templates_dir = templates_dir
        self.html_env = _environment(templates_dir, autoescape=True)
        self.text_env = _environment(templates_dir, autoescape=False)
        self.globals = dict(self.html_env.globals)  # the same in both environments
        self._exists = lru_cache(maxsize=4096)(lambda name: (templates_dir / name).is_file())
        self._plain = Templates(self, {})
        self._bound: dict[str, Templates] = {}

    def template_name(self, campaign: str, step: str, part: str, persona: str | None) -> str:
        """The persona's variant of a part when it exists, else the default one."""
        if persona:
            variant = f"{campaign}/{step}.{persona}.{part}.j2"
            if self._exists(variant):
                return variant
        return f"{campaign}/{step}.{part}.j2"

    def compile_all(self, campaign: str, step: str, channel: str) -> None:
        """Compile every part and persona variant of a step now, so syntax errors surface before sending."""
        self._plain.refresh()
        for path in sorted((self.templates_dir / campaign).glob(f"{step}.*.j2")):
            name = f"{campaign}/{path.name}"
            try:
                self._plain.part(name)
            except TemplateError as exc:
                raise _error(name, exc) from exc

    def bind(self, constants: Mapping[str, Any]) -> Templates:
        """Parts compiled for contexts in which ``constants`` (brand, campaign, params...) never change:
        outputs that depend on them only are written into the template once (compose/fold.py). Parts
        whose template files changed are compiled again (checked here, once per chunk)."""
        key = repr(sorted(constants.items()))
        bound = self._bound.get(key)
        if bound is None:
            if len(self._bound) >= MAX_BOUND:
                self._bound.pop(next(iter(self._bound)))
            bound = self._bound[key] = Templates(self, constants)
        bound.refresh()
        return bound

    def render(self, campaign: str, step: str, channel: str, context: dict[str, Any]) -> dict[str, str]:
        """Render every part of ``channel`` (email: subject, html, txt; sms: sms)."""
        return self._plain.render(campaign, step, channel, context)

"""Rendering: sandboxed Jinja, compiled once per run, persona variants, shared layouts."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import css_inline
from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from loyalflow.errors import RenderError
from loyalflow.spec import PARTS_BY_CHANNEL

SMS_STOP_TEXT = "Reply STOP to opt out."
_WS = re.compile(r"\s+")


def greeting(first_name: Any, fallback: str = "Hi there") -> str:
    """``Hi Ana`` for a usable first name, a friendly fallback otherwise (never ``Hi ,``)."""
    if first_name is None or isinstance(first_name, Undefined):
        return fallback
    name = _WS.sub(" ", str(first_name)).strip()
    return f"Hi {name}" if name and name.lower() not in {"nan", "none", "null"} else fallback


def _environment(templates_dir: Path, autoescape: bool) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(str(templates_dir)),
        undefined=StrictUndefined,
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        cache_size=1000,
    )
    env.globals["greeting"] = greeting
    env.filters["money"] = lambda v, cur="$": f"{cur}{float(v):,.2f}"
    return env


class Renderer:
    """Renders a step's parts for one customer; templates are compiled once and reused."""

    def __init__(self, templates_dir: Path):
        self.templates_dir = templates_dir
        self.html_env = _environment(templates_dir, autoescape=True)
        self.text_env = _environment(templates_dir, autoescape=False)
        self._exists = lru_cache(maxsize=4096)(lambda name: (templates_dir / name).is_file())

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
            env = self.html_env if path.name.endswith(".html.j2") else self.text_env
            name = f"{campaign}/{path.name}"
            try:
                env.get_template(name)
            except TemplateError as exc:
                line = getattr(exc, "lineno", None)
                raise RenderError(f"templates/{name}{f':{line}' if line else ''}: {exc}") from exc

    def render(self, campaign: str, step: str, channel: str, context: dict[str, Any]) -> dict[str, str]:
        """Render every part of ``channel`` (email: subject, html, txt; sms: sms)."""
        persona = (context.get("customer") or {}).get("persona")
        out: dict[str, str] = {}
        for part in PARTS_BY_CHANNEL[channel]:
            name = self.template_name(campaign, step, part, persona)
            env = self.html_env if part == "html" else self.text_env
            try:
                out[part] = env.get_template(name).render(context)
            except TemplateError as exc:
                line = getattr(exc, "lineno", None)
                raise RenderError(f"templates/{name}{f':{line}' if line else ''}: {exc}") from exc
        if "subject" in out:
            out["subject"] = _WS.sub(" ", out["subject"]).strip()
            if not out["subject"]:
                raise RenderError(f"templates/{campaign}/{step}.subject.j2: rendered an empty subject")
        if "html" in out:
            out["html"] = css_inline.inline(out["html"])
        if "sms" in out:
            out["sms"] = _WS.sub(" ", out["sms"]).strip()
            if "STOP" not in out["sms"]:
                out["sms"] = f"{out['sms']} {SMS_STOP_TEXT}"
        return out

"""Flattened and folded templates render exactly what Jinja's own extends/include machinery renders."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jinja2 import TemplateError, UndefinedError

from loyalflow.compose.flatten import flatten
from loyalflow.compose.render import Renderer

BASE = """<html><title>{% block title %}{{ brand.name }}{% endblock %}</title>
{% set shown = brand.name | upper %}<body>{% block body %}default body{% endblock %}
{% for i in [1, 2] %}{% block inner scoped %}inner {{ shown }}{% endblock %}{% endfor %}
{% include "partials/foot.html.j2" %}{{ leaked | default("no leak") }}</body></html>
"""
MIDDLE = """{% extends "layouts/base.html.j2" %}
{% block title %}Middle {{ brand.name }}{% endblock %}
"""
PARTIALS = {
    "partials/foot.html.j2": "{% set leaked = 'x' %}<p>{{ brand['postal'] }} {{ links.unsubscribe }}</p>\n",
    "layouts/base.html.j2": BASE,
    "layouts/middle.html.j2": MIDDLE,
}
CHILDREN = {
    "plain": """{% extends "layouts/base.html.j2" %}
{% block body %}<p>{{ greeting }}, {{ lang | default("en") }} {{ brand.name }}</p>{% endblock %}
""",
    "two_levels": """{% extends "layouts/middle.html.j2" %}
{% block body %}{% if vip %}<b>{{ brand.name }}</b>{% endif %}
{% for x in items %}{{ x }}{% endfor %}{% endblock %}
""",
    "overrides_nested": """{% extends "layouts/base.html.j2" %}
{% block inner %}{{ i }}-{{ brand.name }}{% endblock %}
""",
    "shadowing": """{% extends "layouts/base.html.j2" %}
{% block body %}{% for brand in [{"name": "loop"}] %}{{ brand.name }}{% endfor %}
{{ brand.name }}{% endblock %}
""",
    "missing_name": """{% extends "layouts/base.html.j2" %}
{% block body %}{{ brand.nope }}{% endblock %}
""",
    "set_in_block": """{% extends "layouts/base.html.j2" %}
{% block body %}{% set shown = "local" %}{{ shown }}{% endblock %}
""",
    "unscoped_loop_block": """{% extends "layouts/base.html.j2" %}
{% block body %}{% for i in [1] %}{% block looped %}{{ i }}{% endblock %}{% endfor %}{% endblock %}
""",
}
UNFLATTENABLE = {
    "super": '{% extends "layouts/base.html.j2" %}{% block title %}{{ super() }}!{% endblock %}',
    "dynamic_include": "{% include name %}",
    "ignore_missing": '{% include "partials/nope.html.j2" ignore missing %}x',
    "top_level_set": '{% extends "layouts/base.html.j2" %}{% set x = 1 %}{% block body %}{{ x }}'
    "{% endblock %}",
}
CONTEXT: dict[str, Any] = {
    "brand": {"name": "Harbor & Pine", "postal": "1 Quay <St>"},
    "links": {"unsubscribe": "https://x/u?a=1&b=2"},
    "greeting": "Hi Zoë",
    "lang": "fr",
    "vip": True,
    "items": ["a", "<b>"],
    "name": "partials/foot.html.j2",
}


@pytest.fixture
def renderer(tmp_path: Path) -> Renderer:
    for name, source in {
        **PARTIALS,
        **{f"c/{k}.html.j2": v for k, v in {**CHILDREN, **UNFLATTENABLE}.items()},
    }.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(source, encoding="utf-8")
    return Renderer(tmp_path)


def _jinja(renderer: Renderer, name: str) -> str:
    return renderer.html_env.get_template(name).render(CONTEXT)


@pytest.mark.parametrize("child", sorted(CHILDREN))
@pytest.mark.parametrize("bound", [False, True])
def test_flattened_and_folded_render_like_jinja(renderer: Renderer, child: str, bound: bool) -> None:
    name = f"c/{child}.html.j2"
    assert flatten(renderer.html_env, name) is not None
    templates = renderer.bind({"brand": CONTEXT["brand"], "lang": "fr"}) if bound else renderer._plain
    part = templates.part(name)
    scope = {**renderer.globals, **CONTEXT}
    assert _outcome(lambda: part.text(scope)) == _outcome(lambda: _jinja(renderer, name))


def _outcome(render: Callable[[], str]) -> tuple[str, str]:
    try:
        return "page", render()
    except UndefinedError as exc:  # a block does not see loop variables, flattened or not
        return "undefined", str(exc)


@pytest.mark.parametrize("child", sorted(UNFLATTENABLE))
def test_what_cannot_be_spliced_keeps_jinja_machinery(renderer: Renderer, child: str) -> None:
    name = f"c/{child}.html.j2"
    assert flatten(renderer.html_env, name) is None
    part = renderer._plain.part(name)
    assert not part.cut
    assert part.text({**renderer.globals, **CONTEXT}) == _jinja(renderer, name)


def test_folding_writes_constants_once(renderer: Renderer) -> None:
    part = renderer.bind({"brand": CONTEXT["brand"], "lang": "fr"}).part("c/plain.html.j2")
    code = renderer.html_env.compile(flatten(renderer.html_env, "c/plain.html.j2"), raw=True)
    assert "Harbor &amp; Pine" not in code  # unbound: looked up per message
    assert (
        part.text({**renderer.globals, **CONTEXT, "brand": {"name": "other"}}).count("Harbor &amp; Pine") == 2
    )


def test_syntax_error_in_a_layout_names_the_layout(tmp_path: Path) -> None:
    (tmp_path / "layouts").mkdir()
    (tmp_path / "layouts" / "bad.html.j2").write_text("{% block body %}{{ x }")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "s.html.j2").write_text('{% extends "layouts/bad.html.j2" %}')
    with pytest.raises(TemplateError):
        Renderer(tmp_path)._plain.part("c/s.html.j2")
    from loyalflow.errors import RenderError

    with pytest.raises(RenderError, match=r"templates/layouts/bad.html.j2:1"):
        Renderer(tmp_path).compile_all("c", "s", "email")


def test_an_edited_layout_is_compiled_again_at_the_next_chunk(renderer: Renderer, tmp_path: Path) -> None:
    constants = {"brand": CONTEXT["brand"], "lang": "fr"}
    scope = {**renderer.globals, **CONTEXT}
    before = renderer.bind(constants).part("c/plain.html.j2").text(scope)
    layout = tmp_path / "partials" / "foot.html.j2"
    layout.write_text("<p>edited</p>\n", encoding="utf-8")
    os.utime(layout, (1, 1))  # a different modification time, whatever the clock's resolution
    after = renderer.bind(constants).part("c/plain.html.j2").text(scope)
    assert "edited" in after and "edited" not in before
    assert after == _jinja(renderer, "c/plain.html.j2")

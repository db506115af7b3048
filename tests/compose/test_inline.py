"""CSS inlined once per shape gives exactly what ``css_inline.inline`` gives for each page."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import css_inline
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalflow.compose.render import Renderer

LAYOUT = """<!DOCTYPE html>
<html lang="{{ lang }}"><head><title>{{ title }}</title>
<style>p { color: #123456; } .c a { color: red; } .b { padding: 2px; }</style></head>
<body><div class="c"><p>{{ greeting }}, {{ name }}!</p>
<p class="b" title="{{ name }}"><a href="https://example.com/{{ code }}?n={{ name }}">{{ code }}</a></p>
{% for item in items %}<p>{{ item }}</p>{% endfor %}{% if vip %}<p class="b">VIP {{ name }}</p>{% endif %}
</div></body></html>"""

# Characters the serializer rewrites or that change how HTML is parsed, among ordinary ones.
TRICKY = st.lists(
    st.sampled_from(
        list("aZé€ 😀&<>\"'=;#/\u00a0\r\n\t\x01\x00") + ["&amp;", "&lt;", "&#34;", "]]>", "amp;"]
    ),
    max_size=8,
).map("".join)


def _renderer(tmp_path: Path, **templates: str) -> Renderer:
    for name, source in templates.items():
        path = tmp_path / "c" / f"s.{name}.j2"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return Renderer(tmp_path)


def _plain(renderer: Renderer, context: dict[str, object]) -> str:
    """What the renderer did before: render, then inline the whole page."""
    return css_inline.inline(renderer.html_env.get_template("c/s.html.j2").render(context))


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Renderer:
    return _renderer(tmp_path_factory.mktemp("inline"), html=LAYOUT, subject="x", txt="x")


@settings(max_examples=300, deadline=None)
@given(name=TRICKY, title=TRICKY, code=TRICKY, items=st.lists(TRICKY, max_size=3), vip=st.booleans())
def test_values_anywhere_match_css_inline(
    layout: Renderer, name: str, title: str, code: str, items: list[str], vip: bool
) -> None:
    part = layout._plain.part("c/s.html.j2")
    assert part.cut
    part.shapes.clear()
    part.last = ("", None)
    plain = ["Ana", "Title", "X1", ["one", "two", "six"][: len(items)]]
    for values in (plain, [name, title, code, items]):  # the shape is inlined with the plain values
        context = dict(zip(("name", "title", "code", "items"), values, strict=True))
        context.update(lang="en", greeting="Hi", vip=vip)
        assert part.html({**layout.globals, **context}) == _plain(layout, context)
    cut = all(
        v and not v[0].isspace() and not v[-1].isspace() and "\x00" not in v
        for v in [name, title, code, *items]
    )
    assert len(part.shapes) == (1 if cut else 2)
    if cut:  # the tricky values went through the shape inlined with the plain ones
        assert None not in part.shapes.values()


def test_a_shape_is_inlined_once_and_reused(layout: Renderer) -> None:
    part = layout._plain.part("c/s.html.j2")
    part.shapes.clear()
    part.last = ("", None)
    for i in range(50):
        context = {
            "lang": "en",
            "title": "T",
            "greeting": "Hi",
            "name": f"N{i}",
            "code": f"C{i}",
            "items": [],
        }
        part.html({**layout.globals, **context, "vip": False})
    assert len(part.shapes) == 1 and next(iter(part.shapes.values())) is not None


@pytest.mark.parametrize(
    "body",
    [
        '<p style="color: {{ name }}">x</p>',  # a value parsed as CSS
        "<style>p { color: {{ name }}; }</style><p>x</p>",  # a value inside the style sheet
        "<p>AT&{{ name }}</p>",  # a bare & the value could turn into a character reference
        '<style>[title="{{ name }}"] { color: red; }</style><p title="{{ name }}">x</p>',
        "<!-- {{ name }} --><p>x</p>",
    ],
)
@pytest.mark.parametrize("name", ["amp;T", "blue", 'a"b', "x\r\ny"])
def test_unsafe_shapes_are_inlined_per_page(tmp_path: Path, body: str, name: str) -> None:
    source = f"<html><head><style>p {{ margin: 0; }}</style></head><body>{body}</body></html>"
    renderer = _renderer(tmp_path, html=source)
    part = renderer._plain.part("c/s.html.j2")
    for value in (name, name + "2"):
        fast = _outcome(lambda: part.html({**renderer.globals, "name": value}))  # noqa: B023
        assert fast == _outcome(lambda: _plain(renderer, {"name": value}))  # noqa: B023


def _outcome(render: Callable[[], str]) -> tuple[str, str]:
    """The page, or the error ``css_inline`` raised for it (a value can make the CSS invalid)."""
    try:
        return "page", render()
    except css_inline.InlineError as exc:
        return "error", str(exc)


def test_captured_output_is_never_cut(tmp_path: Path) -> None:
    source = (
        "<html><head><style>p { margin: 0; }</style></head><body>"
        "{% set line %}Hi {{ name }}{% endset %}<p>{{ line | upper }}</p>"
        "{% filter lower %}{{ name }}{% endfilter %}"
        "</body></html>"
    )
    renderer = _renderer(tmp_path, html=source)
    part = renderer._plain.part("c/s.html.j2")
    assert not part.cut
    assert part.html({**renderer.globals, "name": "Ana"}) == _plain(renderer, {"name": "Ana"})

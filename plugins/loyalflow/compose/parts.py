"""A compiled part: one flattened template (compose/flatten.py) with the run constants folded in
(compose/fold.py) and, for HTML, its CSS inlined once per message shape (compose/inline.py)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import css_inline
from jinja2 import Template, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from loyalflow.compose.flatten import captures, flatten
from loyalflow.compose.fold import fold
from loyalflow.compose.inline import MARK, Shape, compile_shape, page, start_collecting, stop_collecting

MAX_SHAPES = 64  # per part; a part whose shape varies more than this is inlined per message


@dataclass
class Part:
    """A compiled part; for HTML, whether its values are cut out and its inlined shapes."""

    template: Template
    cut: bool = False
    reads: frozenset[str] | None = None  # the context names it reads (None: not known)
    shapes: dict[str, Shape | None] = field(default_factory=dict)
    last: tuple[str, Shape | None] = ("", None)  # the latest shape: comparing it beats hashing it
    sources: tuple[tuple[str, float], ...] = ()  # the files spliced in, with their modification times

    def stale(self) -> bool:
        """Whether a file it was compiled from changed since (Jinja's own templates check themselves)."""
        if not self.sources:
            return not self.template.is_up_to_date
        return any(_mtime(path) != mtime for path, mtime in self.sources)

    def text(self, scope: dict[str, Any]) -> str:
        """The rendered part; ``scope`` is the context merged with the environment's globals."""
        template = self.template
        return "".join(template.root_render_func(template.new_context(scope, shared=True)))

    def html(self, scope: dict[str, Any]) -> str:
        """The rendered, CSS-inlined HTML (the same as ``css_inline.inline`` of the plain render)."""
        if not self.cut:
            return css_inline.inline(self.text(scope))
        values = start_collecting()
        try:
            shape = self.text(scope)
        finally:
            stop_collecting()
        if shape.count(MARK) != len(values):  # the copy itself holds the mark character
            return css_inline.inline(self.text(scope))
        last, compiled = self.last
        if shape != last:
            if shape not in self.shapes:
                if len(self.shapes) >= MAX_SHAPES:
                    return css_inline.inline(page(shape, values))
                self.shapes[shape] = compile_shape(shape, values)
            compiled = self.shapes[shape]
            self.last = (shape, compiled)
        if compiled is None:
            return css_inline.inline(page(shape, values))
        return compiled.fill(values)


def compile_part(env: ImmutableSandboxedEnvironment, name: str, constants: Mapping[str, Any]) -> Part:
    """Compile ``name`` flattened and folded; a template that cannot be flattened is Jinja's own,
    rendered and inlined per message as before."""
    files: list[str] = []
    tree = flatten(env, name, files)
    if tree is None:
        return Part(env.get_template(name))
    tree = fold(env, tree, constants)
    filename = env.loader.get_source(env, name)[1]  # type: ignore[union-attr]
    # An imported template sees the whole context: what it reads is not known here. Jinja's analysis
    # leaves out the names of globals, which the context may override (``greeting``): count them all.
    imports = any(True for _ in tree.find_all((nodes.Import, nodes.FromImport)))
    reads = None if imports else frozenset(meta.find_undeclared_variables(tree)) | frozenset(env.globals)
    code = env.compile(tree, name, filename)
    template = env.template_class.from_code(env, code, dict(env.globals), None)
    sources = tuple((path, _mtime(path)) for path in dict.fromkeys(files))
    return Part(template, cut=env.autoescape is True and not captures(tree), reads=reads, sources=sources)


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return -1.0

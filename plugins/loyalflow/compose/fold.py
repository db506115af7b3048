"""Values that are the same for every message of a run written into the template once, as text.

``{{ brand.name }}`` or ``{{ lang | default("en") }}`` print the same thing for every customer of a
run. :func:`fold` evaluates such outputs once, with the environment's own attribute, item and filter
rules, and replaces them by the text Jinja would have written (escaped when the environment escapes).
Only plain lookups on the given names (and a few pure filters) are folded, never a name the template
assigns, and nothing at all in a template that imports or switches autoescaping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import Environment, Undefined, nodes
from jinja2.visitor import NodeTransformer
from markupsafe import escape

PURE_FILTERS = frozenset({"default", "d", "upper", "lower", "trim", "title", "capitalize", "string"})
_NO_FOLDING = (nodes.Import, nodes.FromImport, nodes.EvalContextModifier)


class _Unknown(Exception):  # noqa: N818 - control flow, not an error
    """The expression depends on something other than the constants."""


class _Folder(NodeTransformer):
    def __init__(self, env: Environment, constants: Mapping[str, Any]):
        self.env, self.constants = env, constants

    def value(self, node: nodes.Node) -> Any:
        if isinstance(node, nodes.Const):
            return node.value
        if isinstance(node, nodes.Name) and node.ctx == "load" and node.name in self.constants:
            return self.constants[node.name]
        if isinstance(node, nodes.Getattr):
            return self.env.getattr(self.value(node.node), node.attr)
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            return self.env.getitem(self.value(node.node), node.arg.value)
        if (
            isinstance(node, nodes.Filter)
            and node.name in PURE_FILTERS
            and node.node is not None
            and not node.kwargs
            and node.dyn_args is None
            and node.dyn_kwargs is None
        ):
            args = [self.value(a) for a in node.args]
            return self.env.call_filter(node.name, self.value(node.node), args)
        raise _Unknown

    def visit_Output(self, node: nodes.Output) -> nodes.Output:
        out: list[nodes.Expr] = []
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                out.append(child)
                continue
            try:
                value = self.value(child)
            except Exception:  # noqa: BLE001 - not constant, or it fails at render time as it would have
                out.append(child)
                continue
            if isinstance(value, Undefined):  # fails at render time, as it would have
                out.append(child)
                continue
            text = str(escape(value)) if self.env.autoescape is True else str(value)
            out.append(nodes.TemplateData(text, lineno=child.lineno))
        node.nodes = out
        return node


def fold(env: Environment, tree: nodes.Template, constants: Mapping[str, Any]) -> nodes.Template:
    """``tree`` with every output that depends on ``constants`` only replaced by its text."""
    if not constants or any(True for _ in tree.find_all(_NO_FOLDING)):
        return tree
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx != "load"}
    usable = {k: v for k, v in constants.items() if k not in assigned}
    _Folder(env, usable).visit(tree)  # folds in place: Output nodes are rewritten, never replaced
    return tree

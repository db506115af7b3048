"""One template per part: ``{% extends %}`` and ``{% include %}`` resolved once, when it is compiled.

A child template, its layouts and the partials they include render through three or four nested
generators and a fresh context per include. :func:`flatten` splices them into one syntax tree instead
(the layout's blocks replaced by the child's, an include by a scope holding the included body), which
Jinja compiles into a single render function with the same output. Anything whose meaning would change
when spliced (``super()``, ``self``, dynamic or ``ignore missing`` includes, blocks in an include,
statements outside the blocks of a child) keeps Jinja's own machinery: :func:`flatten` returns ``None``.
"""

from __future__ import annotations

from jinja2 import Environment, nodes
from jinja2.visitor import NodeTransformer

# Nodes whose output is captured or re-escaped before it reaches the message: a value collected by the
# HTML renderer's finalize hook would not land where it was output (see compose/inline.py).
CAPTURING = (
    nodes.AssignBlock,
    nodes.FilterBlock,
    nodes.Macro,
    nodes.CallBlock,
    nodes.EvalContextModifier,
    nodes.Import,
    nodes.FromImport,
)


def _source(env: Environment, name: str, files: list[str]) -> nodes.Template:
    source, filename, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
    if filename:
        files.append(filename)
    return env.parse(source, name, filename)


def _has(body: list[nodes.Node], kind: type[nodes.Node]) -> bool:
    return any(isinstance(n, kind) or any(True for _ in n.find_all(kind)) for n in body)


def _constant_name(node: nodes.Expr) -> str | None:
    return node.value if isinstance(node, nodes.Const) and isinstance(node.value, str) else None


def _blocks(tree: nodes.Node) -> dict[str, nodes.Block]:
    return {b.name: b for b in tree.find_all(nodes.Block)}


def _refers_to_self(tree: nodes.Node) -> bool:
    return any(n.name in ("self", "super") for n in tree.find_all(nodes.Name))


def _only_blocks(body: list[nodes.Node]) -> bool:
    """A child's top level holds its extends, its blocks and whitespace only (the rest is not output)."""
    for node in body[1:]:
        if isinstance(node, nodes.Block):
            continue
        if isinstance(node, nodes.Output) and all(
            isinstance(c, nodes.TemplateData) and not c.data.strip() for c in node.nodes
        ):
            continue
        return False
    return True


class _Splicer(NodeTransformer):
    """Replaces a layout's blocks by the child's and constant includes by their (flattened) bodies."""

    def __init__(self, env: Environment, overrides: dict[str, nodes.Block], depth: int, files: list[str]):
        self.env, self.overrides, self.depth, self.files = env, overrides, depth, files
        self.failed = False

    def visit_Block(self, node: nodes.Block) -> nodes.Node:
        """The child's body at the layout's call site, which decides scoping as in Jinja (an
        overridden ``required`` block is provided)."""
        child = self.overrides.get(node.name)
        if child is None:
            return self.generic_visit(node)
        spliced = nodes.Block(child.name, child.body, node.scoped, False, lineno=child.lineno)
        return self.generic_visit(spliced)

    def visit_Include(self, node: nodes.Include) -> nodes.Node:
        name = _constant_name(node.template)
        body = None
        if name is not None and node.with_context and not node.ignore_missing:
            body = _flat_tree(self.env, name, self.files, self.depth + 1)
        if body is None or _has(body.body, nodes.Block):
            self.failed = True
            return node
        return nodes.Scope(body.body, lineno=node.lineno)


def _flat_tree(env: Environment, name: str, files: list[str], depth: int = 0) -> nodes.Template | None:
    if depth > 8:  # a cycle or an absurdly deep chain: leave it to Jinja
        return None
    tree = _source(env, name, files)
    if _refers_to_self(tree):
        return None
    overrides: dict[str, nodes.Block] = {}
    body = tree.body
    if body and isinstance(body[0], nodes.Extends):
        parent = _constant_name(body[0].template)
        if parent is None or not _only_blocks(body) or _has(body[1:], nodes.Extends):
            return None
        overrides = _blocks(tree)
        base = _flat_tree(env, parent, files, depth + 1)
        if base is None:
            return None
        tree = base
    elif _has(body, nodes.Extends):
        return None
    splicer = _Splicer(env, overrides, depth, files)
    spliced = splicer.visit(tree)
    return None if splicer.failed else spliced


# Statements whose body sees names a block's body would not (loop variables, locals, arguments).
_SCOPING = (
    nodes.For,
    nodes.Macro,
    nodes.CallBlock,
    nodes.FilterBlock,
    nodes.With,
    nodes.Scope,
    nodes.OverlayScope,
    nodes.AssignBlock,
)


class _BlockInliner(NodeTransformer):
    """Blocks outside any scoping statement become plain scopes: the same names are visible there (the
    context, and top-level assignments, which Jinja also exports to the context), one generator less."""

    def visit_Block(self, node: nodes.Block) -> nodes.Node:
        if node.scoped or node.required:
            return node
        return nodes.Scope(node.body, lineno=node.lineno)  # blocks nested in it stay blocks

    def generic_visit(self, node: nodes.Node, *args: object, **kwargs: object) -> nodes.Node:
        if isinstance(node, _SCOPING):
            return node  # blocks inside stay blocks
        return super().generic_visit(node, *args, **kwargs)


def flatten(env: Environment, name: str, files: list[str] | None = None) -> nodes.Template | None:
    """The syntax tree of ``name`` with its layouts and includes spliced in, or ``None`` (see above);
    the paths of the files read are appended to ``files``."""
    tree = _flat_tree(env, name, [] if files is None else files)
    if tree is None:
        return None
    tree.body = [_BlockInliner().visit(node) for node in tree.body]
    return tree


def captures(tree: nodes.Template) -> bool:
    """Whether any output of ``tree`` is captured or re-escaped before it is yielded."""
    return any(True for _ in tree.find_all(CAPTURING)) or _refers_to_self(tree)

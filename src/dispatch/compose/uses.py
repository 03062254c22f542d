"""Which recipient values decide what a template writes, read from its source.

A value printed as it is (``{{ name }}``, ``{{ name or "reader" }}`` when it is set) changes
nothing else in the document: the recipient's message is any render of the same segment with
that value put in. Every other use — a condition, a comparison, a filter, a loop, text built
with it, a print inside a macro, a ``{% set %}``, ``{% filter %}`` or ``{% call %}`` block, or a
block reached through ``super()`` or ``self`` — may change the rest. :func:`analyse` walks the
syntax trees of the templates and of everything they include, extend or import by a constant
name (through the same loader) and says, for each value, whether its truthiness or its whole
text matters. Recipients who agree on those share one render (:mod:`dispatch.compose.personal`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2 import nodes

from dispatch.compose.values import RECIPIENT_NAMES

PRINT, PRINT_BOOL, BOOL, VALUE = "print", "print+bool", "bool", "value"
_RANK = {PRINT: 0, BOOL: 1, VALUE: 2}
_BUFFERED = (nodes.Macro, nodes.CallBlock, nodes.FilterBlock, nodes.AssignBlock)
_DICT_ATTRIBUTES = frozenset(dir(dict))
_WORDS = {BOOL: "decides a condition with", VALUE: "works on"}


@dataclass
class Uses:
    """How a template set uses each recipient value: ``modes`` maps a field to ``bool`` (only
    its truthiness matters) or ``value`` (its text does); a field only printed is absent.
    ``everything``: the templates use the values in a way this analysis cannot follow (the whole
    ``subscriber`` mapping, a template named at run time): every recipient is rendered."""

    modes: dict[str, str] = field(default_factory=dict)
    everything: bool = False
    where: str = ""  # the first such use: "path/email.html line 4 (works on name)"

    def key(self, values: Mapping[str, str]) -> tuple[Any, ...] | None:
        """What a recipient's render depends on besides printed values (None: everything)."""
        if self.everything:
            return None
        return tuple(bool(values.get(f, "")) if truth else values.get(f, "") for f, truth in self._order)

    @functools.cached_property
    def _order(self) -> tuple[tuple[str, bool], ...]:
        """The fields a render depends on, and whether only their truthiness counts."""
        return tuple((f, mode == BOOL) for f, mode in sorted(self.modes.items()))


class _Walk:
    def __init__(self, env: jinja2.Environment, fields: Mapping[str, str]) -> None:
        self.env = env
        self.fields = fields  # subscriber.<name> -> field
        self.uses = Uses()
        self.trees: dict[str, tuple[nodes.Template, str]] = {}
        self.seen: set[tuple[str, bool]] = set()
        self.called_blocks: set[str] = set()  # self.<name>() renders every <name> into a buffer
        self.super_callers: dict[str, set[str]] = {}  # block name -> files whose block calls super()

    # -- templates -----------------------------------------------------------------------------

    def tree(self, name: str) -> tuple[nodes.Template, str] | None:
        if name not in self.trees:
            try:
                loader = self.env.loader
                assert loader is not None
                source, filename, _ = loader.get_source(self.env, name)
                self.trees[name] = (self.env.parse(source, name, filename), filename or name)
            except jinja2.TemplateError:  # a render reports it (with its line), if it is ever reached
                self.everything(None, name, "a template that cannot be read")
                return None
        return self.trees[name]

    def gather(self, roots: Sequence[str]) -> None:
        """Load every template reachable from ``roots``; note the blocks that call ``super()``
        (which renders the block they override into a buffer) and those ``self.<name>()`` renders."""
        todo = list(roots)
        while todo:
            found = self.tree(todo.pop())
            if found is None:
                continue
            tree, filename = found
            for node in tree.find_all((nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)):
                todo += [n for n in self.names(node, filename) if n not in self.trees]
            for block in tree.find_all(nodes.Block):
                if any(_is_name(c.node, "super") for c in block.find_all(nodes.Call)):
                    self.super_callers.setdefault(block.name, set()).add(filename)
            selves = [n for n in tree.find_all(nodes.Name) if n.name == "self"]
            through = [g for g in tree.find_all(nodes.Getattr) if _is_name(g.node, "self")]
            self.called_blocks.update(g.attr for g in through)
            if len(selves) != len(through):
                self.everything(selves[0], filename, "uses 'self' as a value")

    def names(self, node: Any, filename: str) -> list[str]:
        """The constant template names a tag refers to ([] and ``everything`` if not constant)."""
        target = node.template
        items = target.items if isinstance(target, nodes.Tuple | nodes.List) else [target]
        names = [i.value for i in items if isinstance(i, nodes.Const) and isinstance(i.value, str)]
        if len(names) == len(items):
            return names
        self.everything(node, filename, "names a template at run time")
        return []

    def template(self, name: str, buffered: bool) -> None:
        if (name, buffered) in self.seen:
            return
        self.seen.add((name, buffered))
        found = self.tree(name)
        if found is not None:
            self.statements(found[0].body, buffered, found[1])

    # -- statements ----------------------------------------------------------------------------

    def statements(self, body: Sequence[nodes.Node], buffered: bool, filename: str) -> None:
        for node in body:
            self.statement(node, buffered, filename)

    def statement(self, node: nodes.Node, buffered: bool, filename: str) -> None:
        if isinstance(node, nodes.Output):
            for child in node.nodes:
                if not isinstance(child, nodes.TemplateData):
                    self.expr(child, VALUE if buffered else PRINT, filename)
        elif isinstance(node, nodes.If):
            self.expr(node.test, BOOL, filename)
            self.statements([*node.body, *node.elif_, *node.else_], buffered, filename)
        elif isinstance(node, nodes.For):
            self.expr(node.iter, VALUE, filename)
            if node.test is not None:
                self.expr(node.test, BOOL, filename)
            self.statements([*node.body, *node.else_], buffered, filename)
        elif isinstance(node, nodes.Block):
            # a block is rendered into a buffer when another file's block of that name calls
            # super() (it may override this one), or when self.<name>() renders it
            callers = self.super_callers.get(node.name, set()) - {filename}
            inner = buffered or bool(callers) or node.name in self.called_blocks
            self.statements(node.body, inner, filename)
        elif isinstance(node, nodes.Include | nodes.Extends | nodes.Import | nodes.FromImport):
            module = isinstance(node, nodes.Import | nodes.FromImport)  # only its macros run
            for name in self.names(node, filename):
                self.template(name, buffered or module)
        else:
            inner = buffered or isinstance(node, _BUFFERED)
            for part in node.iter_child_nodes():
                if isinstance(part, nodes.Stmt | nodes.Template):
                    self.statement(part, inner, filename)
                else:
                    self.expr(part, VALUE, filename)

    # -- expressions ---------------------------------------------------------------------------

    def expr(self, node: nodes.Node, mode: str, filename: str) -> None:
        target = self.field_of(node)
        if target is not None:
            if target == "*":
                self.everything(node, filename, "uses the whole subscriber")
            elif target:
                self.use(target, mode, node, filename)
            return
        for child, child_mode in _children(node, mode):
            self.expr(child, child_mode, filename)

    def field_of(self, node: nodes.Node) -> str | None:
        """The field an expression is ("" for a column the list lacks: an error for everyone,
        "*" for the whole subscriber), or None when it is not a recipient value."""
        if isinstance(node, nodes.Name) and node.ctx == "load":
            if node.name in RECIPIENT_NAMES:
                return node.name
            return "*" if node.name == "subscriber" else None
        inner = getattr(node, "node", None)
        if not (isinstance(node, nodes.Getattr | nodes.Getitem) and _is_name(inner, "subscriber")):
            return None
        if isinstance(node, nodes.Getattr):
            return "*" if node.attr in _DICT_ATTRIBUTES else self.fields.get(node.attr, "")
        if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            return self.fields.get(node.arg.value, "")
        return "*"

    def use(self, name: str, mode: str, node: nodes.Node, filename: str) -> None:
        mode = BOOL if mode == PRINT_BOOL else mode
        if mode == PRINT:
            return
        known = self.uses.modes.get(name, PRINT)
        if _RANK[mode] > _RANK[known]:
            self.uses.modes[name] = mode
        if not self.uses.where:
            self.uses.where = f"{filename} line {node.lineno} ({_WORDS[mode]} {name})"

    def everything(self, node: nodes.Node | None, filename: str, what: str) -> None:
        self.uses.everything = True
        if not self.uses.where:
            line = f" line {node.lineno}" if node is not None and node.lineno else ""
            self.uses.where = f"{filename}{line} ({what})"


def _is_name(node: Any, name: str) -> bool:
    return isinstance(node, nodes.Name) and node.name == name


def _children(node: nodes.Node, mode: str) -> Iterator[tuple[nodes.Node, str]]:
    """The sub-expressions of ``node`` and how each is used, given how ``node`` is used."""
    printed = mode in (PRINT, PRINT_BOOL)
    if isinstance(node, nodes.Or | nodes.And):
        # ``a or b`` prints a (when set) or b: a's truthiness decides, and both may be printed
        yield node.left, (PRINT_BOOL if printed else mode)
        yield node.right, mode
    elif isinstance(node, nodes.Not):
        yield node.node, BOOL
    elif isinstance(node, nodes.CondExpr):
        yield node.test, BOOL
        yield from ((n, mode) for n in (node.expr1, node.expr2) if n is not None)
    elif (
        isinstance(node, nodes.Filter)
        and printed
        and node.node is not None
        and node.name in ("d", "default", "string")
    ):
        boolean = _default_boolean(node)
        inner = mode if boolean is False else PRINT_BOOL if boolean else VALUE
        yield node.node, inner
        for child in node.iter_child_nodes():
            if child is not node.node:
                yield child, VALUE
    else:
        for child in node.iter_child_nodes():
            yield child, VALUE


def _default_boolean(node: nodes.Filter) -> bool | None:
    """``| default(x, true)``: whether the value's truthiness decides (None: not known)."""
    if node.name == "string":
        return False
    given = [*node.args[1:2], *(k.value for k in node.kwargs if k.key == "boolean")]
    if node.dyn_args is not None or node.dyn_kwargs is not None:
        return None
    if not given:
        return False
    return bool(given[0].value) if isinstance(given[0], nodes.Const) else None


def analyse(envs: Sequence[tuple[jinja2.Environment, str]], fields: Mapping[str, str]) -> Uses:
    """How the templates named (each with its environment) use recipient values; ``fields``
    maps each name ``subscriber.<name>`` accepts to its field."""
    result = Uses()
    for env, root in envs:
        walk = _Walk(env, fields)
        walk.gather([root])
        walk.template(root, buffered=False)
        for name, mode in walk.uses.modes.items():
            if _RANK[mode] > _RANK[result.modes.get(name, PRINT)]:
                result.modes[name] = mode
        result.everything = result.everything or walk.uses.everything
        result.where = result.where or walk.uses.where
    return result

"""The one way passes walk the syntax tree.

`NodeVisitor.visit(node, ...)` calls the visitor's `visit_<ClassName>` method for the
node's class, or `generic_visit`, which visits the node's children (`Node.children()`).
A pass defines the methods for the nodes it cares about and passes its context (a
scope, a depth) as extra arguments. `walk` and `walk_actions` list nodes without
recursion, for passes that only collect: an `else if` chain can be thousands long.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from .nodes import ACTIONS, Node


class NodeVisitor:
    """Dispatches on the node's class name: `visit_Binary` handles a Binary."""

    def visit(self, node: Node, *args: Any) -> Any:
        return self.visitor_for(node)(node, *args)

    def visitor_for(self, node: Node) -> Callable[..., Any]:
        """The method that visits `node`: its `visit_<ClassName>`, or `generic_visit`."""
        return getattr(self, "visit_" + type(node).__name__, self.generic_visit)

    def generic_visit(self, node: Node, *args: Any) -> Any:
        """Visit every child with the same arguments; the result is None."""
        for child in node.children():
            self.visit(child, *args)
        return None


def walk(node: Node) -> Iterator[Node]:
    """`node` and every node inside it, parents before children, in source order."""
    pending = [node]
    while pending:
        current = pending.pop()
        yield current
        pending.extend(reversed(tuple(current.children())))


def walk_actions(actions: Iterable[Node]) -> Iterator[Node]:
    """Every action of `actions` and every action nested in them (if, for each and copy bodies),
    in source order; the expressions in them are not entered."""
    pending = list(reversed(tuple(actions)))
    while pending:
        action = pending.pop()
        yield action
        pending.extend(reversed([child for child in action.children() if isinstance(child, ACTIONS)]))

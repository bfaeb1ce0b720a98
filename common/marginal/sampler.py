"""Records from a fitted graphical model, in numpy: belief propagation on its junction tree (the
tree mbi builds, ``junction_tree.make_junction_tree``), then ancestral sampling clique by clique.

mbi's own sampler re-runs its JAX message passing eagerly, which on these cores compiles a few
hundred small programs (about 30 s) before the first record, and draws from numpy's global
generator. This one works on the model's log-potentials directly, in milliseconds for the
models fedsynth fits, and draws from the caller's generator.
"""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx
import numpy as np
from scipy.special import logsumexp

from common.marginal.pgm import private_pgm

Clique = tuple[str, ...]


class TreeSampler:
    """``potentials`` (log-space tables by clique, axes in clique order) over attributes of
    ``sizes``: the marginals of the junction tree's cliques, and i.i.d. records from them."""

    def __init__(self, sizes: Mapping[str, int], potentials: Mapping[Clique, np.ndarray]) -> None:
        mbi = private_pgm()
        self.sizes = dict(sizes)
        tree, _ = mbi.junction_tree.make_junction_tree(mbi.Domain.fromdict(self.sizes), list(potentials))
        self.tree = tree
        self.psi = {node: np.zeros([self.sizes[a] for a in node]) for node in tree.nodes}
        for clique, table in potentials.items():
            home = next(node for node in tree.nodes if set(clique) <= set(node))
            self.psi[home] = self.psi[home] + _expand(np.asarray(table, dtype=np.float64), clique, home)
        self._calibrate(self.psi)

    def given(self, evidence: Mapping[str, int]) -> TreeSampler:
        """The model conditioned on ``evidence`` (attribute -> cell): every other cell of those
        attributes gets probability 0, and belief propagation runs again, so records are drawn
        from the exact conditional (no rejection, however rare the cell)."""
        psi = dict(self.psi)
        for attr, cell in evidence.items():
            if not 0 <= int(cell) < self.sizes[attr]:
                raise ValueError(f"cell {cell} of {attr} is outside its {self.sizes[attr]} cells")
            home = next(node for node in self.tree.nodes if attr in node)
            mask = np.full(self.sizes[attr], -np.inf)
            mask[int(cell)] = 0.0
            psi[home] = psi[home] + _expand(mask, (attr,), home)
        conditioned = object.__new__(TreeSampler)
        conditioned.sizes, conditioned.tree, conditioned.psi = self.sizes, self.tree, psi
        conditioned._calibrate(psi)
        return conditioned

    def _calibrate(self, psi: Mapping[Clique, np.ndarray]) -> None:
        self.marginals: dict[Clique, np.ndarray] = {}
        self.order: list[tuple[Clique, Clique | None]] = []  # (node, parent), parents first
        for component in nx.connected_components(self.tree):
            root = min(component)
            parents = dict(nx.bfs_predecessors(self.tree.subgraph(component), root))
            order = [root, *(n for n in nx.bfs_tree(self.tree.subgraph(component), root) if n != root)]
            self.order += [(node, parents.get(node)) for node in order]
            self._propagate(psi, order, parents)

    def _propagate(self, psi: Mapping[Clique, np.ndarray], order: list[Clique],
                   parents: Mapping[Clique, Clique]) -> None:
        """Collect to the root, distribute from it (log space); store normalized beliefs."""
        children: dict[Clique, list[Clique]] = {node: [] for node in order}
        for node in order[1:]:
            children[parents[node]].append(node)
        up: dict[Clique, np.ndarray] = {}  # message node -> parent, on the parent's axes
        for node in reversed(order[1:]):
            inner = psi[node] + sum((up[c] for c in children[node]), np.zeros(()))
            up[node] = _message(inner, node, parents[node])
        down: dict[Clique, np.ndarray] = {}  # message parent -> node, on the node's axes
        for node in order[1:]:
            parent = parents[node]
            inner = psi[parent] + down.get(parent, np.zeros(())) + sum(
                (up[c] for c in children[parent] if c != node), np.zeros(()))
            down[node] = _message(inner, parent, node)
        for node in order:
            belief = psi[node] + down.get(node, np.zeros(())) + sum((up[c] for c in children[node]),
                                                                    np.zeros(()))
            self.marginals[node] = np.exp(belief - logsumexp(belief))

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` records: each tree clique's new attributes drawn given its separator's."""
        codes: dict[str, np.ndarray] = {}
        for node, _ in self.order:
            known = [a for a in node if a in codes]
            new = [a for a in node if a not in codes]
            table = _transpose(self.marginals[node], node, (*known, *new))
            rows = table.reshape(int(np.prod([self.sizes[a] for a in known], dtype=np.int64)), -1)
            rows = rows / np.maximum(rows.sum(axis=1, keepdims=True), 1e-300)
            given = (np.ravel_multi_index([codes[a] for a in known], [self.sizes[a] for a in known])
                     if known else np.zeros(n, dtype=np.int64))
            cdf = np.cumsum(rows, axis=1)
            drawn = (rng.random(n)[:, None] * cdf[given, -1:] > cdf[given]).sum(axis=1)
            drawn = np.minimum(drawn, rows.shape[1] - 1)
            for attr, values in zip(new, np.unravel_index(drawn, [self.sizes[a] for a in new]),
                                    strict=True):
                codes[attr] = values.astype(np.int64)
        return codes


def _transpose(table: np.ndarray, axes: Clique, to: Clique) -> np.ndarray:
    return np.transpose(table, [axes.index(a) for a in to])


def _expand(table: np.ndarray, axes: Clique, to: Clique) -> np.ndarray:
    """``table`` over ``axes`` broadcast onto ``to`` (a superset of them)."""
    ordered = [a for a in to if a in axes]
    values = _transpose(table, axes, tuple(ordered))
    return values.reshape([table.shape[axes.index(a)] if a in axes else 1 for a in to])


def _message(inner: np.ndarray, source: Clique, target: Clique) -> np.ndarray:
    """Sum ``inner`` (log, over ``source``'s axes) out of what ``target`` does not share, and
    broadcast the result onto ``target``'s axes."""
    drop = tuple(i for i, a in enumerate(source) if a not in target)
    kept = tuple(a for a in source if a in target)
    reduced = logsumexp(inner, axis=drop) if drop else inner
    return _expand(reduced, kept, target)


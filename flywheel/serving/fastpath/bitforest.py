"""The flattened HistGradientBoosting trees evaluated as bit vectors (QuickScorer-style), many rows per pass.

Same decisions, another order. Each numeric feature's split thresholds are sorted once; a row's value
becomes its *code*, the number of thresholds strictly below it (float64 `<`), so `x <= threshold[j]` is
exactly `code <= j`. NaN has two codes per feature, one per `missing_go_to_left` (0: left at every node;
the number of thresholds: right at every node), and each node reads the one for its direction. A
categorical node's rule (left bitset, known bitset, missing or unknown -> `missing_go_to_left`, value
below 0 -> missing, as trees.py's `_route`) is tabulated per possible code 0..255 and missing; identical
tables are shared. Every node is then "go right when code > thr", one byte compare.

A tree's leaves (at most 64) are numbered left to right: a node that sends a row right clears the leaves
of its left subtree from the row's bit mask, and the lowest bit left standing is the leaf the descent
reaches (QuickScorer, Lucchese et al. 2015). Every node of a tree is evaluated for every row, with no
branch, in any order (AND is exact); leaf values are added per row in `_predictors` order from `0.0 +
baseline`, the order of scikit-learn's `_raw_predict`, so the sums are bitwise the same.

Two loops, picked by row count (`block_for`): up to SCALAR_MAX_ROWS rows, one row at a time (LLVM
vectorizes a tree's nodes); above, blocks of 32, 64 or 128 rows in SIMD lanes, tree by tree, three nodes
a pass (a block's codes and masks stay in L1). Single-threaded and `nogil`: no numba `parallel`, no thread
pool; a replica is one process per core and its predict thread already runs beside the event loop.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from flywheel.serving.fastpath.base import Unsupported, cache_dir, kernel

MAX_LEAVES = 64  # one uint64 mask per tree
MAX_CUTS = 255  # thresholds per feature: codes are uint8 (scikit-learn bins <= 255 values)
GROUP = 3  # nodes per pass of the block loop: trees are padded to a multiple with no-op nodes
SCALAR_MAX_ROWS = 4  # measured (bench/fastpath.py): from 5 rows, a block of 32 lanes beats one row at a time
BATCH_SIZES = (SCALAR_MAX_ROWS, 32, 64)  # the largest row count of each loop but the last: verify() runs all
_trailing_zeros: Any = None  # numba's cttz intrinsic, bound when the kernel is first compiled


def block_for(n: int) -> int:
    """Rows per block for an n-row request (1: one row at a time)."""
    return 1 if n <= SCALAR_MAX_ROWS else 32 if n <= 32 else 64 if n <= 64 else 128


def _score(
    xt: np.ndarray,
    cuts: np.ndarray,
    feat: np.ndarray,
    cat_feature: np.ndarray,
    pred_lo: np.ndarray,
    pred_table: np.ndarray,
    slot: np.ndarray,
    thr: np.ndarray,
    mask: np.ndarray,
    tree_lo: np.ndarray,
    leaf_value: np.ndarray,
    baseline: np.ndarray,
    out: np.ndarray,
    block: int,
) -> None:
    """Raw predictions into `out`, `block` rows at a time, both transposed: (F, n) in, (K, n) out (always C
    order: one compiled signature). feat[:, f]: first cut, half the padded cut count, cut count; tree_lo[:, t]:
    first node, first leaf."""
    n_feat, n = xt.shape
    n_k = baseline.shape[0]
    n_iter = (tree_lo.shape[1] - 1) // n_k
    n_num = 2 * n_feat
    codes = np.zeros((n_num + pred_table.shape[0], block), np.uint8)  # slot x row: 2f NaN right, 2f+1 NaN left
    flat = codes.ravel()
    ids = np.empty(block, np.int64)
    acc = np.empty(n_k * block)
    vt = np.empty(block, mask.dtype)
    ones = ~mask.dtype.type(0)
    ub = np.uint64(block)
    for i0 in range(0, n, block):
        nb = min(block, n - i0)
        for f in range(n_feat):  # numeric codes: a branch-free binary search in the +inf padded cuts
            n_cuts = np.uint64(feat[2, f])
            if n_cuts == np.uint64(0):
                continue
            lo = np.uint64(feat[0, f])
            for r in range(nb):
                v = xt[f, i0 + r]
                pos = np.uint64(0)
                s = np.uint64(feat[1, f])
                while s > np.uint64(0):
                    pos += s * np.uint64(cuts[lo + pos + s - np.uint64(1)] < v)
                    s >>= np.uint64(1)
                nan = np.isnan(v)
                codes[2 * f, r] = n_cuts if nan else pos
                codes[2 * f + 1, r] = np.uint64(0) if nan else pos
        for c in range(cat_feature.shape[0]):  # categorical: 0..255 truncated (_route casts to uint8), else missing
            f = cat_feature[c]
            for r in range(nb):
                v = xt[f, i0 + r]
                ids[r] = int(v) if 0 <= v < 256 else 256
            for p in range(pred_lo[c], pred_lo[c + 1]):
                for r in range(nb):
                    codes[n_num + p, r] = pred_table[p, ids[r]]
        if block == 1:
            for k in range(n_k):
                out[k, i0] = 0.0
                out[k, i0] += baseline[k]
            for it in range(n_iter):
                for k in range(n_k):
                    t = it * n_k + k
                    w = ~np.uint64(0)
                    for nd in range(np.uint64(tree_lo[0, t]), np.uint64(tree_lo[0, t + 1])):
                        left = np.uint64(flat[np.uint64(slot[nd])] <= thr[nd])
                        w &= np.uint64(mask[nd]) | (np.uint64(0) - left)  # arithmetic: no branch to mispredict
                    out[k, i0] += leaf_value[np.uint64(tree_lo[1, t]) + np.uint64(_trailing_zeros(w))]
            continue
        for k in range(n_k):
            for r in range(block):
                acc[k * block + r] = 0.0
                acc[k * block + r] += baseline[k]
        for it in range(n_iter):
            for k in range(n_k):
                t = it * n_k + k
                for r in range(ub):
                    vt[r] = ones
                for nd in range(np.uint64(tree_lo[0, t]), np.uint64(tree_lo[0, t + 1]), np.uint64(GROUP)):
                    a0, t0, m0 = np.uint64(slot[nd]) * ub, thr[nd], mask[nd]
                    nd1, nd2 = nd + np.uint64(1), nd + np.uint64(2)
                    a1, t1, m1 = np.uint64(slot[nd1]) * ub, thr[nd1], mask[nd1]
                    a2, t2, m2 = np.uint64(slot[nd2]) * ub, thr[nd2], mask[nd2]
                    for r in range(ub):
                        vt[r] &= (
                            (m0 if flat[a0 + r] > t0 else ones)
                            & (m1 if flat[a1 + r] > t1 else ones)
                            & (m2 if flat[a2 + r] > t2 else ones)
                        )
                leaves, kb = np.uint64(tree_lo[1, t]), np.uint64(k * block)
                for r in range(ub):
                    acc[kb + r] += leaf_value[leaves + np.uint64(_trailing_zeros(vt[r]))]
        for k in range(n_k):
            for r in range(nb):
                out[k, i0 + r] = acc[k * block + r]


_get_score = kernel(_score)


def _compiled() -> Any:
    global _trailing_zeros
    if _trailing_zeros is None:
        cache_dir()  # before numba reads its configuration
        from numba.cpython.unsafe.numbers import trailing_zeros  # numba's own cttz intrinsic (API image only)

        _trailing_zeros = trailing_zeros
    return _get_score()


class Flat(Protocol):
    """The flattened trees of trees.TreePredictor (see its `_flatten`)."""

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    flags: np.ndarray
    bitset: np.ndarray
    known_row: np.ndarray
    left_bits: np.ndarray
    known_bits: np.ndarray
    roots: np.ndarray
    baseline: np.ndarray


class BitForest:
    """The bit-vector layout of the flattened trees; raises Unsupported when a tree does not fit it."""

    batch_sizes = BATCH_SIZES

    def __init__(self, flat: Flat, n_features: int) -> None:
        self.baseline = flat.baseline
        self._cuts(flat, n_features)
        self._categories(flat, n_features)
        self._trees(flat)

    def _cuts(self, flat: Flat, n_features: int) -> None:
        """Per feature its numeric thresholds, sorted and padded with +inf to 2^k entries; node codes."""
        numeric = (flat.flags & 5) == 0
        self.node_slot = np.zeros(len(flat.flags), np.int64)
        self.node_thr = np.zeros(len(flat.flags), np.int64)
        feat, used = np.zeros((3, n_features), np.int64), 0
        cuts: list[np.ndarray] = []
        for f in range(n_features):
            on_f = numeric & (flat.feature == f)
            t = np.unique(flat.threshold[on_f])  # -0.0 and 0.0 are one threshold: x <= either is the same
            if np.isnan(t).any() or t.size > MAX_CUTS:
                raise Unsupported(f"feature {f}: {t.size} split thresholds (NaN or more than {MAX_CUTS})")
            j = np.searchsorted(t, flat.threshold[on_f])
            if t.size and not np.array_equal(t[j], flat.threshold[on_f]):
                raise Unsupported(f"feature {f}: a threshold is not found among the sorted ones")
            self.node_thr[on_f] = j
            self.node_slot[on_f] = 2 * f + ((flat.flags[on_f] & 2) != 0)  # which NaN code the node reads
            size = 1 << int(t.size).bit_length()  # > t.size: the search never runs past the cuts
            feat[:, f] = (used, size >> 1, t.size)
            cuts.append(np.concatenate([t, np.full(size - t.size, np.inf)]))
            used += size
        self.feat, self.cuts = feat, np.concatenate(cuts)

    def _categories(self, flat: Flat, n_features: int) -> None:
        """Each categorical node's rule, tabulated over codes 0..255 and missing (1: right); shared by equal rules."""
        nodes = np.flatnonzero((flat.flags & 5) == 4)
        c = np.arange(256)
        in_left = (flat.left_bits[flat.bitset[nodes]][:, c >> 5] >> (c & 31)) & 1
        known = (flat.known_bits[flat.known_row[nodes]][:, c >> 5] >> (c & 31)) & 1
        miss_left = (flat.flags[nodes] & 2) != 0
        go_left = np.where(in_left != 0, True, np.where(known != 0, False, miss_left[:, None]))
        rules = np.concatenate([flat.feature[nodes, None], ~go_left, ~miss_left[:, None]], axis=1).astype(np.int64)
        unique, which = np.unique(rules.reshape(len(nodes), 258), axis=0, return_inverse=True)  # grouped by feature
        self.pred_table = np.ascontiguousarray(unique[:, 1:], dtype=np.uint8)
        if not len(self.pred_table):
            self.pred_table = np.zeros((0, 257), np.uint8)
        self.cat_feature, starts = np.unique(unique[:, 0], return_index=True)
        self.pred_lo = np.append(starts, len(unique)).astype(np.int64)
        self.node_slot[nodes] = 2 * n_features + which.reshape(-1)
        self.node_thr[nodes] = 0  # code 0: left, 1: right

    def _trees(self, flat: Flat) -> None:
        """Per tree: its split nodes padded to a multiple of GROUP, their masks, its leaves left to right."""
        ends = np.append(flat.roots[1:], len(flat.flags))
        leaf = (flat.flags & 1) != 0
        slots: list[int] = []
        thrs: list[int] = []
        masks: list[int] = []
        leaves: list[int] = []
        tree_lo = [[0], [0]]
        ones = (1 << 64) - 1
        for root, end in zip(flat.roots.tolist(), ends.tolist(), strict=True):
            span = _leaf_spans(root, flat.left, flat.right, leaf)
            in_order = sorted((s[0], n) for n, s in span.items() if leaf[n])
            if len(in_order) > MAX_LEAVES:
                raise Unsupported(f"a tree has {len(in_order)} leaves, more than {MAX_LEAVES}")
            for n in range(root, end):
                if n in span and not leaf[n]:
                    lo, hi = span[int(flat.left[n])]
                    slots.append(int(self.node_slot[n]))
                    thrs.append(int(self.node_thr[n]))
                    masks.append(ones ^ ((1 << (hi + 1)) - (1 << lo)))  # clears the left subtree's leaves
            pad = -(len(slots) - tree_lo[0][-1]) % GROUP
            slots += [0] * pad  # no-op nodes: every code is <= 255
            thrs += [255] * pad
            masks += [ones] * pad
            leaves += [n for _, n in in_order]
            tree_lo[0].append(len(slots))
            tree_lo[1].append(len(leaves))
        wide = max(np.diff(tree_lo[1]), default=0) > 32
        self.slot = np.asarray(slots, np.int32)
        self.thr = np.asarray(thrs, np.uint8)
        self.mask = np.asarray(masks, np.uint64)
        if not wide:  # up to 32 leaves a tree: twice the rows per SIMD register
            self.mask = (self.mask & 0xFFFFFFFF).astype(np.uint32)
        self.tree_lo = np.asarray(tree_lo, np.int64)
        self.leaf_value = np.ascontiguousarray(flat.value[leaves], dtype=np.float64)

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Raw predictions (n, K), float64, Fortran order (as scikit-learn's `_raw_predict`), from the (n, F) input."""
        if x.ndim != 2 or x.shape[1] != self.feat.shape[1]:  # the loop does not check its indices
            raise ValueError(f"expected (n, {self.feat.shape[1]}) inputs, got {x.shape}")
        xt = np.ascontiguousarray(x.T, dtype=np.float64)  # no copy for TreePredictor.matrix's output
        out = np.empty((self.baseline.shape[0], x.shape[0]), dtype=np.float64)
        _compiled()(
            xt, self.cuts, self.feat, self.cat_feature, self.pred_lo, self.pred_table, self.slot, self.thr,
            self.mask, self.tree_lo, self.leaf_value, self.baseline, out, block_for(xt.shape[1]),
        )  # fmt: skip
        return out.T


def _leaf_spans(root: int, left: np.ndarray, right: np.ndarray, leaf: np.ndarray) -> dict[int, tuple[int, int]]:
    """node -> (first, last) in-order number of the leaves under it."""
    span: dict[int, tuple[int, int]] = {}
    count = 0
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if leaf[node]:
            span[node] = (count, count)
            count += 1
        elif children_done:
            span[node] = (span[int(left[node])][0], span[int(right[node])][1])
        else:  # the left subtree is popped, and numbered, first
            stack += [(node, True), (int(right[node]), False), (int(left[node]), False)]
    return span

"""RFC 6962 / RFC 9162 Merkle tree over audit records: roots, inclusion proofs and
consistency proofs.

Takes leaf hashes (32 bytes each, `leaf_hash(record bytes)`), returns root hashes and
proofs as lists of 32-byte hashes. Trusts nothing: the `verify_*` functions are the
RFC 9162 section 2.1.3.2 / 2.1.4.2 algorithms, written for an auditor's machine.

One tree spans a worker's whole chain (all its segments), as in a transparency log:
tree size N means "records with seq 0 .. N-1 of that chain".
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()
_NODE = hashlib.sha256(b"\x01")  # copied per node: cheaper than a new hash object
MAX_BLOCK_HEIGHT = 16  # bulk-hashed subtrees hold at most 2**16 leaves


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    h = _NODE.copy()
    h.update(left)
    h.update(right)
    return h.digest()


def _pairs(level: list[bytes]) -> list[bytes]:
    """The next level up of a perfect subtree (len(level) even)."""
    out: list[bytes] = []
    add, copy = out.append, _NODE.copy
    for left, right in zip(level[0::2], level[1::2], strict=True):
        h = copy()
        h.update(left)
        h.update(right)
        add(h.digest())
    return out


class CompactTree:
    """The right frontier of a growing tree: one perfect-subtree root per set bit of
    the size, largest first. Appending is amortized one hash; the root is O(log n)."""

    __slots__ = ("size", "_stack")

    def __init__(self, size: int = 0, frontier: Iterable[bytes] = ()) -> None:
        self.size = size
        self._stack = list(frontier)
        if len(self._stack) != bin(size).count("1"):
            raise ValueError("frontier does not match the tree size")

    def append(self, leaf: bytes) -> None:
        self._push(leaf, 0)

    def _push(self, node: bytes, height: int) -> None:
        """Add the root of a perfect subtree of 2**height leaves; the size must be a
        multiple of 2**height (so the node lands on the frontier's right edge)."""
        stack = self._stack
        n = self.size >> height
        while n & 1:
            node = node_hash(stack.pop(), node)
            n >>= 1
        stack.append(node)
        self.size += 1 << height

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Append many leaves. Cuts them into the largest perfect subtrees that fit
        the frontier and hashes each one level by level in a tight loop: the same
        nodes as appending one by one, with less bookkeeping per node."""
        items = leaves if isinstance(leaves, list) else list(leaves)
        done, total = 0, len(items)
        while done < total:
            size = self.size
            height = min(
                (size & -size).bit_length() - 1 if size else MAX_BLOCK_HEIGHT,
                (total - done).bit_length() - 1,
                MAX_BLOCK_HEIGHT,
            )
            level = items[done : done + (1 << height)]
            while len(level) > 1:
                level = _pairs(level)
            self._push(level[0], height)
            done += 1 << height

    def root(self) -> bytes:
        stack = self._stack
        if not stack:
            return EMPTY_ROOT
        acc = stack[-1]
        for left in reversed(stack[:-1]):
            acc = node_hash(left, acc)
        return acc

    def frontier(self) -> list[bytes]:
        return list(self._stack)


class RootsAt:
    """Merkle roots (and the last leaf) at the wanted tree sizes, taken while the
    leaves stream past, so no chain is ever held in memory whole."""

    def __init__(self, sizes: Iterable[int]) -> None:
        self.want = sorted(set(sizes), reverse=True)
        self.tree = CompactTree()
        self.last: bytes | None = None
        self.found: dict[int, tuple[bytes, bytes | None]] = {}

    def add(self, leaves: list[bytes]) -> None:
        tree, want = self.tree, self.want
        start, taken = tree.size, 0
        while want and want[-1] <= start + len(leaves):
            size = want.pop()
            tree.extend(leaves[taken : size - start])
            taken = size - start
            self.found[size] = (tree.root(), leaves[taken - 1] if taken else self.last)
        tree.extend(leaves[taken:])
        if leaves:
            self.last = leaves[-1]


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of RFC 6962 section 2.1."""
    tree = CompactTree()
    tree.extend(leaves)
    return tree.root()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D[n]) of RFC 6962 section 2.1.1, leaf first."""
    if not 0 <= index < len(leaves):
        raise ValueError("leaf index outside the tree")
    path: list[bytes] = []
    lo, hi = 0, len(leaves)
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(root(leaves[lo + k : hi]))
            hi = lo + k
        else:
            path.append(root(leaves[lo : lo + k]))
            lo = lo + k
    path.reverse()
    return path


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 6962 section 2.1.2, for m = old_size, n = len(leaves)."""
    n = len(leaves)
    if not 0 <= old_size <= n:
        raise ValueError("old size outside the tree")
    if old_size in (0, n):
        return []
    path: list[bytes] = []
    lo, hi, m, complete = 0, n, old_size, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            path.append(root(leaves[lo + k : hi]))
            hi = lo + k
        else:
            path.append(root(leaves[lo : lo + k]))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        path.append(root(leaves[lo:hi]))
    path.reverse()
    return path


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> bool:
    """RFC 9162 section 2.1.3.2."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root_hash


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 section 2.1.4.2, plus equal sizes (an empty proof, equal roots). An old
    size of 0 is refused, as Go's tlog.CheckTree does: RFC 6962 defines no proof for it."""
    if not 0 < old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root

"""RFC 6962 tree: roots, inclusion and consistency proofs, against the definition."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from ztproxy.audit import merkle


def mth(leaves: list[bytes]) -> bytes:
    """MTH straight from RFC 6962 section 2.1, recursively."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


@given(st.integers(0, 70))
def test_compact_tree_root_equals_definition_at_every_size(n: int) -> None:
    items = leaves(n)
    tree = merkle.CompactTree()
    for i, leaf in enumerate(items):
        assert tree.root() == mth(items[:i])
        tree.append(leaf)
    assert tree.root() == mth(items) == merkle.root(items)
    again = merkle.CompactTree(tree.size, tree.frontier())
    assert again.root() == tree.root()


def test_known_root_of_rfc6962_empty_and_single() -> None:
    assert merkle.root([]).hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert merkle.root([merkle.leaf_hash(b"")]) == hashlib.sha256(b"\x00").digest()


@given(st.integers(1, 40), st.data())
def test_inclusion_proofs_verify_and_reject_wrong_leaf_or_index(n: int, data) -> None:
    items = leaves(n)
    root = mth(items)
    index = data.draw(st.integers(0, n - 1))
    proof = merkle.inclusion_proof(items, index)
    assert merkle.verify_inclusion(items[index], index, n, proof, root)
    assert not merkle.verify_inclusion(merkle.leaf_hash(b"forged"), index, n, proof, root)
    if n > 1:
        other = (index + 1) % n
        assert not merkle.verify_inclusion(items[index], other, n, proof, root)
    assert not merkle.verify_inclusion(items[index], index, n, proof, mth(items[:-1]))
    assert not merkle.verify_inclusion(items[index], index, 2 * n + 2, proof, root)


@given(st.integers(1, 40), st.data())
def test_consistency_proofs_verify_and_reject_a_rewritten_history(n: int, data) -> None:
    items = leaves(n)
    m = data.draw(st.integers(0, n))
    proof = merkle.consistency_proof(items, m)
    # Old size 0 is refused, as Go's tlog.CheckTree refuses it (no proof is defined).
    assert merkle.verify_consistency(m, n, mth(items[:m]), mth(items), proof) is (m > 0)
    if 0 < m < n:
        forked = list(items)
        forked[data.draw(st.integers(0, m - 1))] = merkle.leaf_hash(b"rewritten")
        assert not merkle.verify_consistency(m, n, mth(forked[:m]), mth(items), proof)
        assert not merkle.verify_consistency(m, n, mth(items[:m]), mth(forked), proof)

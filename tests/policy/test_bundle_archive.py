"""The bundle archive reader refuses every unsafe or oversized archive (unit, no sockets)."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest
from bundle_support import Member, tarball
from hypothesis import given
from hypothesis import strategies as st

from ztproxy.policy.bundle.archive import Limits, member_name, read_archive
from ztproxy.policy.bundle.refusal import (
    ARCHIVE_SIZE,
    MEMBER_NAME,
    MEMBER_SIZE,
    MEMBER_TYPE,
    TRUNCATED,
    BundleRefused,
)

GOOD = [("data.json", b"{}"), ("a/b.rego", b"package a\n")]


def refused(raw: bytes, limits: Limits | None = None) -> str:
    with pytest.raises(BundleRefused) as info:
        read_archive(raw, limits or Limits())
    return info.value.reason


def test_opa_layout_reads_with_names_relative_to_the_bundle() -> None:
    archive = read_archive(tarball(GOOD))
    assert [n for n, _ in archive.files] == ["data.json", "a/b.rego"]
    # `tar -C dir -czf x .` writes "./" names: the same bundle
    assert read_archive(tarball([Member("./data.json", b"{}")])).files == (("data.json", b"{}"),)


@pytest.mark.parametrize(
    "name",
    [
        "../evil.rego",
        "/../evil.rego",
        "a/../../evil.rego",
        "a/./b.rego",
        "//etc/passwd",
        "C:/x.rego",
        "a\\..\\b.rego",
        "a//b.rego",
        "a/\nb.rego",
    ],
)
def test_unsafe_member_names_are_refused(name: str) -> None:
    assert refused(tarball([*GOOD, Member(name, b"x")])) == MEMBER_NAME


@pytest.mark.parametrize(
    "kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE]
)
def test_links_and_devices_are_refused(kind: bytes) -> None:
    assert (
        refused(tarball([*GOOD, Member("x.rego", kind=kind, linkname="/etc/passwd")]))
        == MEMBER_TYPE
    )


def test_a_member_over_the_limit_is_refused() -> None:
    raw = tarball([*GOOD, ("big.json", b" " * 5000)])
    assert refused(raw, Limits(max_member_bytes=4096)) == MEMBER_SIZE
    read_archive(raw, Limits(max_member_bytes=5000))


def test_zip_bomb_stops_at_the_ratio_and_the_total() -> None:
    bomb = tarball([*GOOD, ("data/data.json", b"\x00" * (8 << 20))])
    assert len(bomb) < 64 << 10
    assert refused(bomb) == ARCHIVE_SIZE  # ratio
    assert refused(bomb, Limits(max_ratio=10**9, max_total_bytes=1 << 20)) == ARCHIVE_SIZE


def test_truncated_and_garbage_archives_are_refused() -> None:
    raw = tarball(GOOD)
    for cut in (
        raw[: len(raw) // 2],
        raw[:10],
        b"not gzip at all",
        gzip.compress(b"not a tar" * 100),
    ):
        assert refused(cut) == TRUNCATED


def test_a_name_twice_is_refused() -> None:
    assert refused(tarball([*GOOD, ("data.json", b"{}")])) == MEMBER_NAME


def test_directories_are_skipped() -> None:
    raw = tarball([Member("/a/", kind=tarfile.DIRTYPE), *GOOD])
    assert len(read_archive(raw).files) == 2


_segment = st.text(st.characters(codec="utf-8"), min_size=0, max_size=6)


@given(
    st.lists(st.one_of(_segment, st.sampled_from(["..", ".", ""])), min_size=1, max_size=5),
    st.sampled_from(["", "/", "./", "//"]),
)
def test_accepted_names_never_leave_the_bundle(segments: list[str], prefix: str) -> None:
    """Property: a name is either refused or normalizes to plain segments: no "..",
    no ".", no empty segment, no backslash or control character, not absolute."""
    raw = prefix + "/".join(segments)
    try:
        name = member_name(raw)
    except BundleRefused as exc:
        assert exc.reason == MEMBER_NAME
        return
    parts = name.split("/")
    assert all(p not in ("", ".", "..") for p in parts)
    assert not name.startswith("/") and "\\" not in name
    assert all(ord(c) >= 0x20 and ord(c) != 0x7F for c in name)
    assert not (len(name) > 1 and name[1] == ":")


def test_read_archive_is_bounded_by_the_compressed_limit() -> None:
    raw = tarball(GOOD)
    assert refused(raw, Limits(max_compressed_bytes=len(raw) - 1)) == ARCHIVE_SIZE


def test_a_member_whose_content_is_cut_is_refused() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("/data.json")
        info.size = 4096
        tar.addfile(info, io.BytesIO(b"{" * 4096))
    cut = buf.getvalue()[:1024]  # header and the start of the content
    assert refused(gzip.compress(cut)) == TRUNCATED

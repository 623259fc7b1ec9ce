"""One serialization of the policy input, shared by the audit digest, the cache key and
the engines.

Takes the policy input document (a JSON-like mapping built by `stages.policy_input`);
returns a `PreparedInput`: the same document (a read-only dict, so every existing
caller keeps working) that also carries, computed once on first use,

    json           canonical JSON of the whole document (sorted keys, compact, UTF-8 text)
    sha256         hex SHA-256 of `json`: the audit record's `policy_input_sha256`
    stable_sha256  hex SHA-256 of the canonical JSON without `request.id` and
                   `request.time`: what the decision cache keys on

Both digests come from one pass of the JSON encoder: the document is cut around
`request`, and around `id` and `time` inside it, each piece encoded once, so the full
text and the stable text differ exactly by the `"id":...` and `"time":...` members. The
bytes are those of `json.dumps(doc, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)` (tests/policy/test_policy_prepared.py proves it with hypothesis
against `canonical.canonical_bytes` and `canonical.stable_view`). Trusts the document as
built by the input stage; holds no secret beyond what the document holds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import orjson

from .canonical import canonical_bytes, stable_view

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _c_encoder() -> Callable[[Any], str]:
    """json's C encoder, made once: `JSONEncoder.encode` builds a new one per call,
    which costs more than encoding a small piece. No circular-reference markers (the
    input is a tree); otherwise the arguments `JSONEncoder.iterencode` passes."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # a Python without the C accelerator
        return _ENCODER.encode
    encoder = make(
        None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", True, False, True
    )

    def encode(value: Any) -> str:
        return "".join(encoder(value, 0))

    return encode


_encode = _c_encoder()


def _members(obj: Mapping[str, Any]) -> str:
    """`"k":v,...` of a canonical object without its braces ("" when empty)."""
    return _encode(obj)[1:-1]


def _join(*parts: str) -> str:
    return ",".join(p for p in parts if p)


def serialize(doc: Mapping[str, Any]) -> tuple[str, str]:
    """(canonical JSON of doc, canonical JSON of doc without request id and time)."""
    request = doc.get("request")
    if not isinstance(request, Mapping) or not all(isinstance(k, str) for k in doc):
        text = canonical_bytes(doc).decode("utf-8")
        return text, canonical_bytes(stable_view(doc)).decode("utf-8")
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for key, value in doc.items():
        if key < "request":
            before[key] = value
        elif key != "request":
            after[key] = value
    low: dict[str, Any] = {}  # request members sorting before "id"
    mid: dict[str, Any] = {}  # between "id" and "time"
    high: dict[str, Any] = {}  # after "time"
    for key, value in request.items():
        if not isinstance(key, str):  # sort_keys would fail on mixed keys: let it say so
            text = canonical_bytes(doc).decode("utf-8")
            return text, canonical_bytes(stable_view(doc)).decode("utf-8")
        if key < "id":
            low[key] = value
        elif key < "time":
            if key != "id":
                mid[key] = value
        elif key != "time":
            high[key] = value
    r_low, r_mid, r_high = _members(low), _members(mid), _members(high)
    r_id = '"id":' + _encode(request["id"]) if "id" in request else ""
    r_time = '"time":' + _encode(request["time"]) if "time" in request else ""
    head, tail = _members(before), _members(after)
    full_request = "{" + _join(r_low, r_id, r_mid, r_time, r_high) + "}"
    stable_request = "{" + _join(r_low, r_mid, r_high) + "}"
    full = "{" + _join(head, '"request":' + full_request, tail) + "}"
    stable = "{" + _join(head, '"request":' + stable_request, tail) + "}"
    return full, stable


_SORTED = orjson.OPT_SORT_KEYS


def fast_serialize(doc: Mapping[str, Any]) -> tuple[bytes, bytes] | None:
    """`serialize` through orjson, as UTF-8 bytes, for a document WITHOUT floats (the
    caller's promise; see the module docstring). None when orjson refuses the
    document: use `serialize`."""
    full = sorted_json(doc)
    stable = _fast_stable(doc) if full is not None else None
    return None if full is None or stable is None else (full, stable)


def sorted_json(doc: Mapping[str, Any]) -> bytes | None:
    """orjson's bytes of `doc` with sorted keys; None when orjson refuses it (an int
    past 64 bits, a lone surrogate, a key that is not a string). The canonical bytes
    only for a document without floats (see the module docstring)."""
    try:
        return orjson.dumps(doc, option=_SORTED)
    except (orjson.JSONEncodeError, TypeError):
        return None


def _fast_stable(doc: Mapping[str, Any]) -> bytes | None:
    request = doc.get("request")
    if not isinstance(request, Mapping):
        return sorted_json(doc)
    stable_request = {k: v for k, v in request.items() if k != "id" and k != "time"}
    return sorted_json({**doc, "request": stable_request})


def _read_only(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise TypeError("a prepared policy input is read-only")


class PreparedInput(dict[str, Any]):
    """The policy input document, read-only at the top level, with its serialization.

    Nested values are plain dicts and lists: nobody may change them after preparing
    (the input stage builds them and hands them on; nothing else writes)."""

    __slots__ = ("_bytes", "_json", "_sha256", "_stable_sha256", "_no_floats", "_exact_ints")

    def __init__(self, doc: Mapping[str, Any], *, no_floats: bool = False) -> None:
        """`no_floats`: the builder's promise that no float is anywhere in `doc` (the
        fast encoder's condition); False is always safe."""
        super().__init__(doc)
        self._bytes: bytes | None = None
        self._json: str | None = None
        self._sha256 = ""
        self._stable_sha256 = ""
        self._no_floats = no_floats
        self._exact_ints = False  # orjson proved every integer within 53 bits

    def _prepare(self) -> bytes:
        """The canonical bytes and their digest; the stable digest too when it comes
        from the same pass (the json way), else only when asked for (a decision cache
        keyed without request id and time asks; one keyed on the whole input does not)."""
        full = None
        if self._no_floats:
            try:  # the same bytes; raises for an integer past 53 bits (or the like)
                full = orjson.dumps(self, option=_SORTED | orjson.OPT_STRICT_INTEGER)
                self._exact_ints = True
            except (orjson.JSONEncodeError, TypeError):
                full = sorted_json(self)
        if full is None:
            text, stable_text = serialize(self)
            full = text.encode("utf-8")
            self._json = text
            self._stable_sha256 = hashlib.sha256(stable_text.encode("utf-8")).hexdigest()
        self._sha256 = hashlib.sha256(full).hexdigest()
        self._bytes = full
        return full

    @property
    def no_floats(self) -> bool:
        return self._no_floats

    @property
    def exact_ints(self) -> bool:
        """True when the encoding proved every integer within 53 bits (float64-exact:
        what the embedded engine holds without rounding). False: not known."""
        if self._bytes is None:
            self._prepare()
        return self._exact_ints

    @property
    def json_bytes(self) -> bytes:
        """The canonical JSON as UTF-8 bytes."""
        full = self._bytes
        return full if full is not None else self._prepare()

    @property
    def json(self) -> str:
        if self._json is None:
            self._json = self.json_bytes.decode("utf-8")
        return self._json

    @property
    def sha256(self) -> str:
        if self._bytes is None:
            self._prepare()
        return self._sha256

    @property
    def stable_sha256(self) -> str:
        if self._bytes is None:
            self._prepare()
        if not self._stable_sha256:  # only the orjson way leaves it for later
            stable = _fast_stable(self) if self._no_floats else None
            if stable is None:
                stable = serialize(self)[1].encode("utf-8")
            self._stable_sha256 = hashlib.sha256(stable).hexdigest()
        return self._stable_sha256

    __setitem__ = __delitem__ = _read_only
    clear = pop = popitem = setdefault = update = __ior__ = _read_only


def prepare(doc: Mapping[str, Any]) -> PreparedInput:
    return doc if isinstance(doc, PreparedInput) else PreparedInput(doc)


def stable_sha256(doc: Mapping[str, Any]) -> str:
    """The cache key's digest for any mapping (prepared or not)."""
    if isinstance(doc, PreparedInput):
        return doc.stable_sha256
    return hashlib.sha256(canonical_bytes(stable_view(doc))).hexdigest()


def full_sha256(doc: Mapping[str, Any]) -> str:
    """The digest of the whole canonical input (request id and time included)."""
    if isinstance(doc, PreparedInput):
        return doc.sha256
    return hashlib.sha256(canonical_bytes(doc)).hexdigest()

"""The immutable runtime: everything a request is decided under, swapped as one.

A `Runtime` holds the config, the trust store (bundle and CRLs per trust domain), the
listener TLS context built from them, the upstream TLS contexts, the authenticator, the
decider, the upstream client session and the header sets derived from the config. It
is built whole (file reads off the event loop) and published with ONE reference
assignment (`RuntimeRef.current = new`); a reload that fails at any step publishes
nothing. A request reads `RuntimeRef.current` once, at its start, and uses that runtime
to its end. A connection accepted under an older runtime has its peer re-validated
against the current runtime's trust store and CRLs before its next request is decided
(see server/acceptor.ConnState).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .config.load import Config
from .seams import Authenticator, Decider
from .stages.headers import BASE_CREDENTIAL_HEADERS
from .tls.trust import TrustStore

if TYPE_CHECKING:
    import aiohttp


@dataclass(frozen=True, slots=True)
class HeaderPlan:
    """Header name sets the pipeline derives from the config and the authenticator."""

    hidden: frozenset[str] = frozenset()  # never shown to policy, logs or audit
    stripped: frozenset[str] = frozenset()  # removed from every request going upstream
    not_forwarded: frozenset[str] = frozenset()  # credentials that stop at the proxy


@dataclass(frozen=True, slots=True)
class Runtime:
    config: Config
    trust: TrustStore
    tls: ssl.SSLContext | None
    upstream_ssl: Mapping[str, ssl.SSLContext | None]
    authenticator: Authenticator
    decider: Decider
    session: aiohttp.ClientSession | None
    headers: HeaderPlan = field(default_factory=HeaderPlan)
    generation: int = 0


class RuntimeRef:
    """The one mutable cell: the runtime new requests and handshakes take. Publishing a
    runtime (`ref.current = new`) also tells the watchers (the TLS listener re-validates
    connections busy with a long-lived request, such as a WebSocket, under it)."""

    __slots__ = ("current", "_watchers")
    current: Runtime
    _watchers: list[Callable[[Runtime], None]]

    def __init__(self, runtime: Runtime) -> None:
        object.__setattr__(self, "_watchers", [])
        self.current = runtime

    def __setattr__(self, name: str, value: object) -> None:
        # Reads stay a plain slot read (one per request); only publishing pays.
        object.__setattr__(self, name, value)
        if name == "current":
            for watcher in tuple(self._watchers):
                watcher(value)  # type: ignore[arg-type]

    def watch(self, watcher: Callable[[Runtime], None]) -> None:
        self._watchers.append(watcher)


def header_plan(config: Config, authenticator: Authenticator) -> HeaderPlan:
    creds = frozenset(authenticator.credential_header_names()) | BASE_CREDENTIAL_HEADERS
    asserted = frozenset(config.headers.asserted())
    strip = frozenset(config.headers.strip)
    # Tokens stop here; the application's own cookies go on to it (never to the
    # policy, a log line or the audit record).
    return HeaderPlan(
        hidden=creds | strip | asserted, stripped=strip | asserted, not_forwarded=creds - {"cookie"}
    )

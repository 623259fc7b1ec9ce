"""Core config sections: listener (mTLS), trust domains, routes, limits, timeouts,
asserted headers, admin listener, logging.

Defaults are the safe ones: TLS 1.2 minimum, client certificate required, every
timeout short, routes require both a user and a device credential unless the config
says `none` in writing.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..model import Binding, Requirement, Route
from .policy import check_decision_path
from .reader import Node

_NOT_ALNUM = re.compile(r"[^a-z0-9]")

DEFAULT_ASSERTED_HEADERS = (
    "x-client-spiffe-id",
    "x-client-cert-sha256",
    "x-forwarded-client-cert",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "forwarded",
    "x-real-ip",
    "x-user",
    "x-user-subject",
    "x-user-issuer",
    "x-device-id",
    "x-request-id",
)

# Headers that upstreams commonly trust, stripped from every request by default (in
# every case and "_"/"-" spelling) unless a route passes one through by name
# (`routes[].pass_headers`): client-certificate headers set by TLS terminators, URL and
# method overrides, and identity headers set by authenticating front ends.
DEFAULT_STRIPPED_HEADERS = (
    # client certificate (nginx, Apache mod_ssl, HAProxy, IIS ARR, Envoy, Traefik)
    "x-ssl-client-cert",
    "x-client-cert",
    "ssl-client-cert",
    "ssl-client-subject-dn",
    "ssl-client-issuer-dn",
    "ssl-client-verify",
    "x-ssl-client-s-dn",
    "x-ssl-client-i-dn",
    "x-ssl-client-verify",
    "x-ssl-client-dn",
    "x-ssl-cert",
    "x-arr-clientcert",
    "x-forwarded-tls-client-cert",
    "x-forwarded-tls-client-cert-info",
    "x-client-verify",
    "x-client-dn",
    "x-client-cert-dn",
    "x-amzn-mtls-clientcert",
    # URL and method overrides
    "x-original-url",
    "x-rewrite-url",
    "x-forwarded-uri",
    "x-forwarded-prefix",
    "x-forwarded-path",
    "x-original-uri",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-http-method-override",
    "x-method-override",
    "x-http-method",
    "x-original-method",
    "x-forwarded-method",
    # identity asserted by an authenticating front end
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-forwarded-access-token",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-groups",
    "x-auth-request-preferred-username",
    "x-auth-request-access-token",
    "x-remote-user",
    "remote-user",
    "x-remote-group",
    "x-authenticated-user",
    "x-authenticated-userid",
    "x-webauth-user",
    "x-ms-client-principal",
    "x-ms-client-principal-id",
    "x-ms-client-principal-name",
    "x-goog-authenticated-user-email",
    "x-goog-authenticated-user-id",
    "x-amzn-oidc-data",
    "x-amzn-oidc-identity",
    "x-amzn-oidc-accesstoken",
    "remote-groups",
    "remote-email",
    "remote-name",
    "x-credential-identifier",
    "x-authenticated-scope",
    "x-authenticated-groups",
    "x-anonymous-consumer",
    "x-userinfo",
    "x-id-token",
    # client address and scheme, read by Rack, Django, request-ip, Spring, IIS
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-forwarded-for",
    "x-forwarded",
    "forwarded-for",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "front-end-https",
    "x-url-scheme",
    "x-original-host",
    "x-host",
    "x-envoy-original-path",
    "x-envoy-original-url",
)
# ... and every header whose normalized name starts with one of these.
DEFAULT_STRIPPED_PREFIXES = (
    "x-ssl-client-",
    "x-client-cert-",
    "ssl-client-",
    "x-auth-request-",
    "x-forwarded-client-cert-",
    "x-remote-user-",
    "x-ms-client-principal-",
    "x-amzn-oidc-",
    "x-amzn-mtls-",
    "x-consumer-",
)


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    address: str = "127.0.0.1"
    port: int = 8443
    cert_file: str = ""
    key_file: str = ""
    min_tls_version: str = "1.2"
    handshake_timeout_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class TrustDomainConfig:
    """One SPIFFE trust domain: the CA bundle its workloads' chains must end in, and
    the CRLs (one PEM file, a CRL per issuing CA) every certificate of the chain is
    checked against."""

    name: str
    bundle_file: str
    crl_file: str | None = None


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_header_bytes: int = 16384
    max_body_bytes: int = 10 * 1024 * 1024
    max_line_bytes: int = 8190
    max_concurrent_requests: int = 1024
    # share of max_concurrent_requests one caller (SPIFFE ID) may hold at once
    max_concurrent_per_caller: int = 256
    # connections from one source address still reading their request headers
    max_header_phase_per_source: int = 64
    max_chunk_extension_bytes: int = 256


@dataclass(frozen=True, slots=True)
class TimeoutsConfig:
    upstream_connect_seconds: float = 2.0
    upstream_read_seconds: float = 30.0
    keepalive_seconds: float = 75.0
    shutdown_drain_seconds: float = 15.0
    request_header_seconds: float = 10.0  # from the first byte to the end of the headers
    body_idle_seconds: float = 10.0  # longest pause between two pieces of a request body
    body_total_seconds: float = 120.0  # longest time to receive a whole request body


@dataclass(frozen=True, slots=True)
class HeadersConfig:
    """Names of the headers the proxy asserts to the upstream (lowercase), and the
    set it strips from every incoming request in every case and `_`/`-` spelling."""

    spiffe_id: str = "x-client-spiffe-id"
    cert_sha256: str = "x-client-cert-sha256"
    xfcc: str = "x-forwarded-client-cert"
    forwarded_for: str = "x-forwarded-for"
    request_id: str = "x-request-id"
    user_subject: str = "x-user-subject"
    user_issuer: str = "x-user-issuer"
    device_id: str = "x-device-id"
    strip: tuple[str, ...] = DEFAULT_ASSERTED_HEADERS + DEFAULT_STRIPPED_HEADERS
    strip_prefixes: tuple[str, ...] = DEFAULT_STRIPPED_PREFIXES

    def asserted(self) -> tuple[str, ...]:
        return (
            self.spiffe_id,
            self.cert_sha256,
            self.xfcc,
            self.forwarded_for,
            self.request_id,
            self.user_subject,
            self.user_issuer,
            self.device_id,
        )


@dataclass(frozen=True, slots=True)
class AdminConfig:
    enabled: bool = True
    address: str = "127.0.0.1"
    port: int = 9901


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "info"
    format: str = "auto"  # json | console | auto (console when stderr is a terminal)


def _valid_trust_domain(td: str) -> bool:
    # SPIFFE: lowercase letters, digits, dots, dashes, underscores; no port, no scheme.
    return bool(td) and all(c.isascii() and (c.islower() or c.isdigit() or c in ".-_") for c in td)


MIGRATION_HINT = (
    "write `trust_domains: [{name: corp.example, bundle_file: <CA bundle>, "
    "crl_file: <CRL, optional>}]` (one CA bundle per trust domain) and drop "
    "listener.client_ca_file / listener.crl_file"
)


def is_old_trust_form(root: Node) -> bool:
    """`trust_domains: [corp.example]` (names) or a CA bundle under `listener`."""
    raw = root.value.get("trust_domains") if root.is_mapping() else None
    listener = root.value.get("listener") if root.is_mapping() else None
    names = isinstance(raw, str) or (isinstance(raw, list) and any(isinstance(x, str) for x in raw))
    return names or (
        isinstance(listener, dict)
        and not raw
        and any(k in listener for k in ("client_ca_file", "crl_file"))
    )


def parse_trust_domains(root: Node) -> tuple[TrustDomainConfig, ...]:
    """`trust_domains: [{name, bundle_file, crl_file?}]`. The old form (a list of names
    sharing `listener.client_ca_file`) gets one line saying what to write instead."""
    if is_old_trust_form(root):
        root.error(f"the list-of-names form is gone: {MIGRATION_HINT}", "trust_domains")
        root.raw("trust_domains")
        return ()
    out: list[TrustDomainConfig] = []
    names: set[str] = set()
    any_td = False
    for node in root.items("trust_domains", required=True):
        any_td = True
        if not node.is_mapping():
            node.error("must be a mapping {name, bundle_file, crl_file?}")
            continue
        name = node.str("name", required=True) or ""
        if name and not _valid_trust_domain(name):
            node.error(f"{name!r} is not a SPIFFE trust domain (lowercase name, no scheme)", "name")
        elif name in names:
            node.error(f"duplicate trust domain {name!r}", "name")
        names.add(name)
        out.append(
            TrustDomainConfig(
                name=name,
                bundle_file=node.path_value("bundle_file", required=True) or "",
                crl_file=node.path_value("crl_file"),
            )
        )
        node.finish()
    if root.has("trust_domains") and not any_td:
        root.error("must list at least one trust domain", "trust_domains")
    return tuple(out)


def parse_listener(node: Node, *, old_form: bool = False) -> ListenerConfig:
    address = node.str("address", "127.0.0.1")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        if address != "localhost":
            node.error(f"{address!r} is not an IP address", "address")
    cfg = ListenerConfig(
        address=address,
        port=node.int("port", 8443, min=0, max=65535),
        cert_file=node.path_value("cert_file", required=True) or "",
        key_file=node.path_value("key_file", required=True) or "",
        min_tls_version=node.choice("min_tls_version", ("1.2", "1.3"), "1.2"),
        handshake_timeout_seconds=node.number("handshake_timeout_seconds", 5.0, min=0.1, max=60),
    )
    for old in ("client_ca_file", "crl_file"):
        if node.has(old):
            node.raw(old)
            if not old_form:  # the old form as a whole is reported once, at trust_domains
                node.error(
                    f"moved to trust_domains[].bundle_file / crl_file: {MIGRATION_HINT}", old
                )
    node.finish()
    return cfg


def _parse_url(node: Node, key: str) -> str:
    url = node.str(key, "", required=True) or ""
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        node.error("not an http(s) URL", key)
    elif parts.query or parts.fragment or parts.username:
        node.error("must not carry a query, fragment or credentials", key)
    elif parts.path not in ("", "/"):
        # the request path is appended as is: a prefix here would send the upstream
        # "/prefix/api/..." while the policy decided on "/api/..."
        node.error("must not carry a path (scheme://host[:port] only)", key)
    return url.rstrip("/")


def _requirement(node: Node, key: str) -> Requirement:
    return Requirement(node.choice(key, ("required", "optional", "none"), "required"))


def parse_routes(root: Node) -> tuple[Route, ...]:
    routes: list[Route] = []
    names: set[str] = set()
    any_route = False
    for node in root.items("routes", required=True):
        any_route = True
        if not node.is_mapping():
            node.error("must be a mapping")
            continue
        name = node.str("name", required=True) or ""
        if name in names:
            node.error(f"duplicate route name {name!r}", "name")
        names.add(name)
        prefix = node.str("path_prefix", "/")
        if (
            not isinstance(prefix, str)
            or not prefix.startswith("/")
            or "%" in prefix
            or "/../" in prefix + "/"
            or "/./" in prefix + "/"
        ):
            node.error("must be a canonical absolute path starting with /", "path_prefix")
            prefix = "/"
        host = node.str("host")
        decision_path = node.str("decision_path")
        if isinstance(decision_path, str) and (problem := check_decision_path(decision_path)):
            node.error(problem, "decision_path")
            decision_path = None
        routes.append(
            Route(
                name=name,
                service=node.str("service", required=True) or "",
                upstream=_parse_url(node, "upstream"),
                path_prefix=prefix,
                host=host.lower() if isinstance(host, str) else None,
                user=_requirement(node, "user"),
                device=_requirement(node, "device"),
                device_binding=Binding(
                    node.choice("device_binding", ("required", "relaxed"), "required")
                ),
                decision_path=decision_path,
                upstream_ca_file=node.path_value("upstream_ca_file"),
                upstream_cert_file=node.path_value("upstream_cert_file"),
                upstream_key_file=node.path_value("upstream_key_file"),
                websocket=node.bool("websocket", True),
                pass_headers=_pass_headers(node),
                max_concurrent=node.int("max_concurrent", 0, min=0),
            )
        )
        if bool(routes[-1].upstream_cert_file) != bool(routes[-1].upstream_key_file):
            node.error("upstream_cert_file and upstream_key_file go together", "upstream_key_file")
        node.finish()
    if root.has("routes") and not any_route:
        root.error("must list at least one route", "routes")
    return tuple(routes)


_PROXY_SET = frozenset(DEFAULT_ASSERTED_HEADERS) | {"host"}


def _pass_headers(node: Node) -> frozenset[str]:
    names = node.str_list("pass_headers", ())
    out: set[str] = set()
    for i, name in enumerate(names):
        norm = name.strip().lower().replace("_", "-")
        if not norm or not all(c.isascii() and (c.isalnum() or c == "-") for c in norm):
            node.error("must be a header name", f"pass_headers[{i}]")
        elif norm in _PROXY_SET:
            node.error(
                f"{norm!r} is set by the proxy and cannot be passed through", f"pass_headers[{i}]"
            )
        else:
            out.add(norm)
    return frozenset(out)


def c_parser_in_use() -> bool:
    """Is aiohttp's server using its C HTTP parser (llhttp)? The pure-Python one (under
    AIOHTTP_NO_EXTENSIONS=1, or without the compiled extension) accepted `get` as
    `GET` and forwarded a chunk size of `ffffffffffffffff1`."""
    from aiohttp import http_parser  # the class aiohttp's web_protocol imports from here

    return getattr(http_parser.HttpRequestParser, "__module__", "") == "aiohttp._http_parser"


def parse_limits(node: Node) -> LimitsConfig:
    if not c_parser_in_use():
        node.problems.add(
            "<environment>",
            "aiohttp's C HTTP parser is not in use "
            "(AIOHTTP_NO_EXTENSIONS is set or the extension is missing); "
            "ztproxy refuses to run on the pure-Python parser",
        )
    d = LimitsConfig()
    cfg = LimitsConfig(
        max_header_bytes=node.int(
            "max_header_bytes", d.max_header_bytes, min=1024, max=1024 * 1024
        ),
        max_body_bytes=node.int("max_body_bytes", d.max_body_bytes, min=0),
        max_line_bytes=node.int("max_line_bytes", d.max_line_bytes, min=256, max=65536),
        max_concurrent_requests=node.int(
            "max_concurrent_requests", d.max_concurrent_requests, min=1
        ),
        max_concurrent_per_caller=node.int(
            "max_concurrent_per_caller", d.max_concurrent_per_caller, min=1
        ),
        max_header_phase_per_source=node.int(
            "max_header_phase_per_source", d.max_header_phase_per_source, min=1
        ),
        max_chunk_extension_bytes=node.int(
            "max_chunk_extension_bytes", d.max_chunk_extension_bytes, min=0, max=65536
        ),
    )
    node.finish()
    return cfg


def parse_timeouts(node: Node) -> TimeoutsConfig:
    d = TimeoutsConfig()
    cfg = TimeoutsConfig(
        upstream_connect_seconds=node.number(
            "upstream_connect_seconds", d.upstream_connect_seconds, min=0.01, max=30
        ),
        upstream_read_seconds=node.number(
            "upstream_read_seconds", d.upstream_read_seconds, min=0.01, max=600
        ),
        keepalive_seconds=node.number("keepalive_seconds", d.keepalive_seconds, min=0, max=3600),
        shutdown_drain_seconds=node.number(
            "shutdown_drain_seconds", d.shutdown_drain_seconds, min=0, max=600
        ),
        request_header_seconds=node.number(
            "request_header_seconds", d.request_header_seconds, min=0.05, max=300
        ),
        body_idle_seconds=node.number("body_idle_seconds", d.body_idle_seconds, min=0.05, max=600),
        body_total_seconds=node.number(
            "body_total_seconds", d.body_total_seconds, min=0.05, max=3600
        ),
    )
    node.finish()
    return cfg


def _header_name(node: Node, key: str, default: str) -> str:
    value = node.str(key, default) or default
    if not all(c.isascii() and (c.isalnum() or c == "-") for c in value):
        node.error("must be a header name of letters, digits and dashes", key)
        return default
    return value.lower()


def parse_headers(node: Node) -> HeadersConfig:
    d = HeadersConfig()
    names = {
        key: _header_name(node, key, getattr(d, key))
        for key in (
            "spiffe_id",
            "cert_sha256",
            "xfcc",
            "forwarded_for",
            "request_id",
            "user_subject",
            "user_issuer",
            "device_id",
        )
    }
    # the spelling the pipeline compares (stages.headers.normalize_name): lowercase,
    # every character but a letter or digit read as "-" (x_internal_role strips
    # X-Internal-Role, as `pass_headers` already did)
    extra = tuple(_NOT_ALNUM.sub("-", h.strip().lower()) for h in node.str_list("strip", ()))
    cfg = HeadersConfig(
        **names,  # type: ignore[arg-type]
        strip=DEFAULT_ASSERTED_HEADERS + DEFAULT_STRIPPED_HEADERS + extra,
    )
    node.finish()
    return cfg


def parse_admin(node: Node) -> AdminConfig:
    cfg = AdminConfig(
        enabled=node.bool("enabled", True),
        address=node.str("address", "127.0.0.1"),
        port=node.int("port", 9901, min=0, max=65535),
    )
    node.finish()
    return cfg


def parse_logging(node: Node) -> LoggingConfig:
    cfg = LoggingConfig(
        level=node.choice("level", ("debug", "info", "warning", "error"), "info"),
        format=node.choice("format", ("auto", "json", "console"), "auto"),
    )
    node.finish()
    return cfg

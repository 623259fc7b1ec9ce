"""A bare aiohttp mTLS pass-through proxy: the Python ceiling of the benchmark.

Does what any Python reverse proxy must do and nothing more: terminates TLS with a
required, CA-verified client certificate, parses HTTP/1.1 with aiohttp's C parser,
drops hop-by-hop headers, forwards through one pooled aiohttp client session and
streams the answer back, exactly as ztproxy's forward stage does (same library, same
streaming calls). No identity, token, policy or audit work: the difference between
this process and ztproxy is the price of the checks.

    python bench/bare_proxy.py --port P --upstream http://127.0.0.1:U \
        --cert server.pem --key server.key --ca ca.pem [--workers N]

Listens on 127.0.0.1 only; SIGTERM / SIGINT stop it. With --workers N it forks N
processes sharing the port with SO_REUSEPORT, like `ztproxy run --workers N`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl
import sys

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

CHUNK = 64 * 1024
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
        "host",
        "content-length",
    }
)


def server_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
    ctx.load_cert_chain(cert, key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _clean(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    named: set[str] = set()
    for value in headers.getall("Connection", ()):
        named.update(v.strip().lower() for v in value.split(","))
    for name, value in headers.items():
        low = name.lower()
        if low not in HOP_BY_HOP and low not in named:
            out.add(name, value)
    return out


def make_handler(upstream: str, session_box: list[aiohttp.ClientSession]):  # type: ignore[no-untyped-def]
    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        session = session_box[0]
        has_body = bool(request.headers.get("Transfer-Encoding")) or request.headers.get(
            "Content-Length", "0"
        ) not in ("", "0")
        try:
            upstream_resp = await session.request(
                request.method,
                URL(upstream + request.raw_path, encoded=True),
                headers=_clean(request.headers),
                data=request.content.iter_chunked(CHUNK) if has_body else None,
                allow_redirects=False,
                auto_decompress=False,
            )
        except TimeoutError:
            return web.Response(status=504, text="upstream timeout")
        except (aiohttp.ClientError, OSError):
            return web.Response(status=502, text="upstream unavailable")
        async with upstream_resp:
            resp = web.StreamResponse(
                status=upstream_resp.status,
                reason=upstream_resp.reason,
                headers=_clean(upstream_resp.headers),
            )
            if upstream_resp.content_length is not None:
                resp.content_length = upstream_resp.content_length
            first = await upstream_resp.content.read(CHUNK)
            await resp.prepare(request)
            if first:
                await resp.write(first)
                async for chunk in upstream_resp.content.iter_chunked(CHUNK):
                    await resp.write(chunk)
            await resp.write_eof()
            return resp

    return handle


async def serve(args: argparse.Namespace, reuse_port: bool) -> int:
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=1024, limit_per_host=0, keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(total=None, connect=2, sock_connect=2, sock_read=30)
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
    )
    server = web.Server(make_handler(args.upstream.rstrip("/"), [session]))
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(
        runner,
        "127.0.0.1",
        args.port,
        ssl_context=server_context(args.cert, args.key, args.ca),
        reuse_port=reuse_port or None,
        backlog=1024,
    )
    await site.start()
    print(f"bare proxy listening on https://127.0.0.1:{args.port} pid {os.getpid()}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with asyncio.timeout(args.max_seconds):
            await stop.wait()
    except TimeoutError:
        pass
    await runner.cleanup()
    await session.close()
    return 0


def _run(args: argparse.Namespace, reuse_port: bool) -> int:
    if args.loop == "uvloop":  # what `ztproxy run` uses when uvloop is installed
        import uvloop

        return int(uvloop.run(serve(args, reuse_port)))
    return asyncio.run(serve(args, reuse_port))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT")
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ca", required=True, help="client CA bundle (client certs required)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="asyncio",
        help="event loop (the benchmark passes the one ztproxy runs on)",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=3600.0,
        help="exit after this long even without a signal (bounded)",
    )
    args = p.parse_args(argv)
    if args.workers <= 1:
        return _run(args, False)
    pids = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _run(args, True)
            finally:
                os._exit(code)
        pids.append(pid)

    def relay(signum: int, _frame: object) -> None:
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, relay)
    worst = 0
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        worst = max(worst, abs(os.waitstatus_to_exitcode(status)))
    return worst


if __name__ == "__main__":
    sys.exit(main())

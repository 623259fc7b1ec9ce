"""The channel between the supervisor and one worker: a socketpair, one JSON object per
frame (4-byte big-endian length, then the UTF-8 JSON).

The worker speaks first: `{"op": "started", "port": N}` once its proxy listens (or it
exits: the supervisor reads EOF). Then the supervisor asks and the worker answers in
order, each answer repeating its question's id (an answer that comes after its question
gave up is dropped, never taken for another's):
`{"op": "metrics", "id": 7}` -> `{"id": 7, "text": <Prometheus text>}`,
`{"op": "readyz", "id": 8}` -> the worker's readiness document with `"id": 8`.
EOF on the worker's side means the supervisor is gone: the worker shuts down as on
SIGTERM. Nothing on this channel comes from a client; it never leaves the machine
(an AF_UNIX socketpair).
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

_HEADER = struct.Struct(">I")
MAX_FRAME = 16 * 1024 * 1024  # a metrics exposition of a big config is well below this


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next frame, or None at EOF."""
    try:
        header = await reader.readexactly(_HEADER.size)
        (size,) = _HEADER.unpack(header)
        if size > MAX_FRAME:
            raise ValueError(f"control frame of {size} bytes")
        body = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        return None
    value = json.loads(body)
    if not isinstance(value, dict):
        raise ValueError("control frame is not a JSON object")
    return value


async def write_frame(writer: asyncio.StreamWriter, value: dict[str, Any]) -> None:
    body = json.dumps(value, separators=(",", ":")).encode()
    writer.write(_HEADER.pack(len(body)) + body)
    await writer.drain()

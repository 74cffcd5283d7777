"""zstd compression. The only module that imports ``zstandard``.

A ``ZstdCompressor`` shared between threads crashed the interpreter (shared/library-notes.md),
so every call builds its own compressor/decompressor: callers may run these functions in any
thread. Frames are standard zstd frames (RFC 8878) with the content size recorded.
"""

from __future__ import annotations

import zstandard

DEFAULT_LEVEL = 3


class DecompressionError(Exception):
    """The input is not a valid zstd frame. Internal: the repository re-raises it as
    IntegrityError naming the object."""


def compress(data: bytes, level: int = DEFAULT_LEVEL) -> bytes:
    """One zstd frame holding ``data`` (content size recorded in the frame header)."""
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(data)


def decompress(data: bytes) -> bytes:
    """The content of exactly one zstd frame (nothing after it). Raises DecompressionError."""
    try:
        dobj = zstandard.ZstdDecompressor().decompressobj()
        out = dobj.decompress(data)
    except zstandard.ZstdError:
        raise DecompressionError("invalid zstd data") from None
    if not dobj.eof or dobj.unused_data:
        raise DecompressionError("truncated zstd frame or trailing bytes")
    return out

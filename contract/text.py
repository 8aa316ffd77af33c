"""One text sniffer for every file a person hands us: a spec, a data file, a training log.

Each reader words the fix for its own kind of file; what is wrong, and where, is said
the same way everywhere: a NUL byte near the start means binary (git's heuristic), and
bytes that do not decode as UTF-8 are reported with their offset and line.
"""

from __future__ import annotations

SNIFF_BYTES = 65536  # a NUL byte this early means a binary file, not text with an odd character


class NotText(ValueError):
    """The bytes are not UTF-8 text. ``str()`` says what and where; ``binary`` tells the two cases apart."""

    def __init__(self, message: str, binary: bool):
        super().__init__(message)
        self.binary = binary


def decode_text(raw: bytes) -> str:
    """``raw`` as text; raises :class:`NotText` for binary or non-UTF-8 bytes, naming the offset (and line)."""
    nul = raw.find(b"\x00", 0, SNIFF_BYTES)
    if nul >= 0:
        raise NotText(f"looks binary (a NUL byte at offset {nul})", binary=True)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise NotText(
            f"not UTF-8: byte 0x{raw[err.start]:02x} at offset {err.start}, line {line} ({err.reason})", binary=False
        ) from None

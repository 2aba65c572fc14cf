"""Result writers and readers. Every writer is atomic: it writes a temporary file and renames it."""

from vidtrack.export.atomic import atomic_write
from vidtrack.export.rle_json import read_rle_json, write_rle_json

__all__ = ["atomic_write", "read_rle_json", "write_rle_json"]

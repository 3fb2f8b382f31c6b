"""The image files to read: paths given, folders searched, and file names as text any output can hold."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

IMAGE_SUFFIXES = {
    *(".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"),
    *(".pbm", ".pgm", ".ppm", ".pnm"),  # Netpbm, as some datasets ship their digits
    *(".avif", ".heic", ".heif"),  # phone cameras' formats (HEIC needs the heic extra: it says so)
}


def iter_images(paths: Sequence[str]) -> Iterator[tuple[Path, str | None]]:
    """(path, None) for each file given and each image file found in the directories given, searched
    recursively in sorted order; (path, error) for what cannot be searched (an unreadable directory, a
    directory reached again through a link). Every entry named like an image is given, whatever it is
    (a FIFO, a broken link): reading it then says what is wrong, so nothing is skipped without a row.

    The walk keeps its own stack: a tree a thousand levels deep is no deeper for it.
    """
    for top in map(Path, paths):
        if not top.is_dir():
            yield top, None
            continue
        found: list[tuple[Path, str | None]] = []
        seen: set[tuple[int, int]] = set()
        stack = [top]
        while stack:
            folder = stack.pop()
            try:
                info = folder.stat()
                if (info.st_dev, info.st_ino) in seen:
                    found.append((folder, "a directory reached again through a link (a loop): not searched again"))
                    continue
                seen.add((info.st_dev, info.st_ino))
                with os.scandir(folder) as entries:
                    listed = list(entries)
            except OSError as e:
                found.append((folder, f"cannot read the directory: {e.strerror or e}"))
                continue
            for entry in listed:
                try:
                    is_dir = entry.is_dir()  # through links: a linked folder is searched, once
                except OSError:
                    is_dir = False  # a link loop or a dangling link: named like an image, it gets its row
                if is_dir:
                    stack.append(Path(entry.path))
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                    found.append((Path(entry.path), None))
        yield from sorted(found, key=lambda item: os.fsencode(item[0]))


def shown_path(path: Path | str) -> str:
    """A path (or a message naming one) as text that any output can hold: bytes that are not UTF-8 in a
    file name are escaped
    (``\\xff``) instead of stopping the output under a strict encoding."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")

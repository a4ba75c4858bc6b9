"""Open image files safely: one place decides what is an image and what is refused.

Ingest, query images and uploads all come through :func:`decode_image`. Anything that is
not a usable image raises :class:`~spyglass.errors.ImageRejected` with a stable reason
code, so indexing can record it and go on, and the CLI and HTTP layers can say why.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from spyglass.errors import ImageRejected
from spyglass.image_meta import HeaderMeta, read_header_meta

#: Formats Spyglass decodes (Pillow format names) and the extensions they come under.
DECODED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF", "JPEG2000", "PPM", "QOI")
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".gif", ".webp", ".bmp", ".dib"}
    | {".tif", ".tiff", ".avif", ".jp2", ".j2k", ".jpx", ".ppm", ".pgm", ".pbm", ".pnm", ".qoi"}
)
#: Image formats people keep in photo folders that Spyglass cannot decode (yet): they
#: are recorded as skipped rather than silently ignored.
UNSUPPORTED_EXTENSIONS = frozenset(
    {".heic", ".heif", ".svg", ".psd", ".xcf", ".jxl", ".eps", ".ai"}
    | {".cr2", ".cr3", ".nef", ".arw", ".dng", ".raf", ".orf", ".rw2", ".raw", ".srw", ".pef"}
)

#: Images are decoded no smaller than this on the shorter side (JPEG draft mode
#: decodes big photos at 1/2, 1/4 or 1/8 scale, which is several times faster).
DEFAULT_MIN_SIDE = 448

#: A region of an image as fractions of its width and height: (left, top, right, bottom),
#: each in [0, 1], left < right, top < bottom.
Region = tuple[float, float, float, float]

# EXIF orientations that swap width and height.
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image ready for an encoder, with the original's size and format."""

    image: Image.Image
    #: Size of the original as displayed (after EXIF orientation), in pixels.
    width: int
    height: int
    format: str
    #: What the header says (capture time, camera, GPS...); empty unless asked for.
    meta: HeaderMeta = field(default_factory=HeaderMeta)


def is_candidate(path: str | Path) -> bool:
    """Whether ingest should look at this file at all (by its extension)."""
    suffix = Path(path).suffix.lower()
    return suffix in IMAGE_EXTENSIONS or suffix in UNSUPPORTED_EXTENSIONS


def _require_regular(mode: int) -> None:
    """Refuse FIFOs, sockets and devices by type, before reading: a named pipe blocks a
    reader forever and a device can be endless."""
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise ImageRejected("not-a-file", "is a directory")
    kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket or device"
    raise ImageRejected("special-file", f"is {kind}, not a regular file")


def read_image_file(path: str | Path, max_bytes: int) -> bytes:
    """The file's bytes, or :class:`ImageRejected` for empty, huge or unreadable files."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in UNSUPPORTED_EXTENSIONS:
        raise ImageRejected(
            "unsupported-format", f"{suffix} files are not supported (convert to JPEG or PNG)"
        )
    try:
        _require_regular(path.stat().st_mode)
        # O_NONBLOCK: a file swapped for a FIFO after the check must not block the open;
        # the descriptor's own type is checked again before anything is read.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(descriptor, "rb") as handle:
            status = os.fstat(handle.fileno())
            _require_regular(status.st_mode)
            if status.st_size > max_bytes:
                raise ImageRejected(
                    "file-too-large",
                    f"file is {status.st_size:,} bytes, over the limit of {max_bytes:,}",
                )
            data = handle.read(max_bytes + 1)
    except FileNotFoundError as exc:
        raise ImageRejected("missing", "file disappeared while indexing") from exc
    except PermissionError as exc:
        raise ImageRejected("unreadable", "permission denied") from exc
    except IsADirectoryError as exc:
        raise ImageRejected("not-a-file", "is a directory") from exc
    except OSError as exc:
        raise ImageRejected("unreadable", f"cannot read file: {exc.strerror or exc}") from exc
    if not data:
        raise ImageRejected("empty-file", "file is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageRejected("file-too-large", f"file is over the limit of {max_bytes:,} bytes")
    return data


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    min_side: int = DEFAULT_MIN_SIDE,
    max_side: int | None = None,
    header: bool = False,
) -> DecodedImage:
    """Bytes -> RGB image, upright per EXIF, decoded no smaller than ``min_side``.

    With ``max_side``, an image whose longer side is at least twice that is reduced by
    an integer factor right after decoding, before it is turned upright and into RGB:
    a query image needs no more, and a small PNG declaring 8000x8000 then costs one
    8-bit plane instead of several full-size RGB copies. ``width`` and ``height`` stay
    the original's. With ``header``, ``meta`` holds the EXIF facts (read from the
    header Pillow has already parsed: no second decode).

    Refuses, with :class:`ImageRejected`, anything that is not an image in one of
    :data:`DECODED_FORMATS`, declares more than ``max_pixels`` pixels (checked from the
    header, before any pixel is decoded), or is truncated or corrupt.
    """
    if not data:
        raise ImageRejected("empty-file", "file is empty (0 bytes)")
    with warnings.catch_warnings():
        # Pillow warns about large images; our own limit below is the one that counts.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=DECODED_FORMATS)
        except Image.DecompressionBombError as exc:
            raise ImageRejected("decompression-bomb", str(exc)) from exc
        except UnidentifiedImageError as exc:
            raise _not_an_image(data) from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageRejected("corrupt", f"cannot read image header: {exc}") from exc

        width, height = image.size
        if width <= 0 or height <= 0:
            raise ImageRejected("corrupt", f"image declares an empty size {width}x{height}")
        if width * height > max_pixels:
            raise ImageRejected(
                "decompression-bomb",
                f"image declares {width}x{height} = {width * height:,} pixels, "
                f"over the limit of {max_pixels:,}",
            )
        fmt = image.format or "unknown"
        orientation = _orientation(image)
        meta = read_header_meta(image) if header else HeaderMeta()
        if orientation in _TRANSPOSED_ORIENTATIONS:
            width, height = height, width

        try:
            if fmt == "JPEG":
                image.draft("RGB", (min_side, min_side))
            image.load()
            reduced = _reduced(image, max_side)
            if reduced is not image:
                # The reduced copy carries no EXIF: turn it upright from what was read.
                method = _EXIF_TRANSPOSE.get(orientation)
                upright: Image.Image = reduced.transpose(method) if method else reduced
            else:
                upright = ImageOps.exif_transpose(image) or image
            rgb = _to_rgb(upright)
        except Image.DecompressionBombError as exc:
            raise ImageRejected("decompression-bomb", str(exc)) from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            message = str(exc)
            reason = "truncated" if "truncated" in message or "EOF" in message else "corrupt"
            raise ImageRejected(reason, f"cannot decode image: {message}") from exc
    return DecodedImage(image=rgb, width=width, height=height, format=fmt, meta=meta)


def open_image_file(
    path: str | Path, *, max_pixels: int, max_bytes: int, min_side: int = DEFAULT_MIN_SIDE
) -> DecodedImage:
    """Read and decode one file; see :func:`decode_image`."""
    return decode_image(read_image_file(path, max_bytes), max_pixels=max_pixels, min_side=min_side)


#: EXIF orientation -> the transposition that shows the image upright (as ImageOps does).
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _reduced(image: Image.Image, max_side: int | None) -> Image.Image:
    """``image`` reduced by the largest integer factor that keeps its longer side at
    least ``max_side``; the image itself when no reduction applies."""
    if max_side is None:
        return image
    factor = max(image.size) // max_side
    if factor < 2:
        return image
    try:
        return image.reduce(factor)
    except ValueError:  # a mode reduce() does not take (palette images): keep it whole
        return image


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block should not cost the image
        return 1


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits rather than clipping everything to white.
        import numpy as np

        values = np.asarray(image, dtype=np.float32)
        top = float(values.max()) or 1.0
        image = Image.fromarray((values * (255.0 / top)).astype("uint8"), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels go on white, as a viewer shows them.
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _not_an_image(data: bytes) -> ImageRejected:
    head = data[:512]
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return ImageRejected("not-an-image", "not an image: the file holds text")
    signatures = {
        b"ftypheic": "HEIC",
        b"ftypheix": "HEIC",
        b"ftypmif1": "HEIF",
        b"<svg": "SVG",
        b"8BPS": "Photoshop",
    }
    for signature, name in signatures.items():
        if signature in head[:64]:
            return ImageRejected("unsupported-format", f"{name} images are not supported")
    return ImageRejected("not-an-image", "not an image Spyglass can read")


def crop_region(image: Image.Image, region: Region) -> Image.Image:
    """Crop to a region given in fractions (left, top, right, bottom); at least 1 px."""
    width, height = image.size
    left, top, right, bottom = region
    x0, y0 = round(left * width), round(top * height)
    return image.crop(
        (x0, y0, max(round(right * width), x0 + 1), max(round(bottom * height), y0 + 1))
    )

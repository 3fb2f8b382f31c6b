"""The one path from a real image to 28x28 MNIST-style digits (white ink on black, uint8).

Every caller (CLI, library, API, UI, benchmarks) goes through here, so training-time and serving-time
preprocessing cannot drift apart (one step is left out of the training renders: the search for a
printed line under a single digit, see `to_mnist`). The steps:

1. decode: PNG, JPEG, BMP, GIF (first frame), TIFF, WebP; EXIF orientation; 16-bit, palette, CMYK;
   transparency composited so that ink drawn on a transparent canvas stays visible. Size and pixel
   caps are checked before any pixel is decoded; large JPEGs are decoded at reduced size (draft).
2. ink map: level the paper (take off the plane of its lighting gradient), detect polarity (dark ink
   on paper, or chalk on a board), divide out the background (lighting, tinted paper) and get ink
   strength in [0, 1] per pixel.
3. ink mask: a threshold relative to the strongest ink, so paper texture, noise and faint ruled lines
   are not ink; specks and page-wide lines are dropped, and so are a form's printed lines (boxes,
   combs, underlines: `forms.form_rules`).
4. MNIST normalization, as MNIST itself was made: each digit's ink, stroke width adjusted to MNIST's,
   fitted into a 20x20 box preserving aspect ratio (anti-aliased), centred by centre of mass in 28x28.

`segment` finds the digits of a line (a zip code, an amount) left to right: it joins strokes that
belong together (a 5's flag) and leaves splitting touching digits to the recognizer, which can score
candidate cuts.
"""

from __future__ import annotations

import functools
import io
import os
import re
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .forms import MIN_DIGIT_HEIGHT, SPECK, form_rules, straight_lines
from .masks import bbox as _bbox
from .masks import percentile as _percentile

__all__ = [
    "MAX_BYTES",
    "MAX_PIXELS",
    "Component",
    "ImageError",
    "InkImage",
    "digit_to_mnist",
    "elongation",
    "group_mask",
    "group_to_mnist",
    "ink_image",
    "line_ink_image",
    "load_image",
    "merge_components",
    "open_image",
    "preprocessing_digest",
    "segment",
    "split_lines",
    "stroke_width",
    "to_mnist",
]

# Bumped whenever `to_mnist` gives other fields for the same image: preprocessed arrays cached on disk
# (`data.load_labelled`) are keyed by it. 2: tiny images enlarged, dense ink's polarity from the corners.
# 3: images already in MNIST's format read as they are; digits cropped tight to their ink read as
# tiny bitmaps are (one background level, the paper's level, no desk, shadow or ruled paper).
# 4: the lines of lined or squared paper looked for where they end short of the image's edges (a
# photo of a notebook page); a comb's teeth taken off in more cells. 5: light ink filling most of a
# dark frame (a white digit drawn large on black) no longer taken for a page on a desk nor for a
# vignette (training's white-on-black letters and doodles among its non-digits changed with it);
# 28x28 bitmaps of two levels are preprocessed, not read as they are (see FIELD_GREY). 6: a fall of
# the blocks' means towards dense ink is no lighting where the brightest paper (the darkest board)
# does not follow it (`_lit_by_ink`), a thin region reaching far from the edges is no desk, and a page
# must be wide in the image as it is, not only closed (a digit flush with three edges of its crop or
# canvas); 92 of training's first 600 non-digits (white letters and doodles drawn large) changed.
# 7: the lines of lined or squared paper that OpenCV's probabilistic transform missed are found by
# the ink's projection along the lines it found, and their ends' fringes go with them; a margin's
# rule much lighter than the pen goes where a stroke lies along it too (`forms`); small marks left
# beside one digit by the printed lines taken off go (STUB_AREA); a weaker vignette is levelled by
# its curve (`_paper_curve`). 8: a small square bitmap whose ink fills it both ways (a digit stretched
# to fill its frame, as USPS's and Semeion's are stored) is fitted as STRETCHED_ASPECT wide as high, and
# keeps a piece at its edge that a crop would lose as a neighbour's; bold light strokes flush with a dark
# canvas's edges are no page on a desk (PAGE_WIDE_AS_IS). 9: a small box round one digit whose lines
# blur to a quarter of its side is a frame, and a comb's tooth a little wider than its base a tooth
# (`forms.FRAME_LINE_HOLDING`, `forms.TOOTH_WIDTH`). 10: a desk under a lighting gradient of its own
# is a desk, not paper in a shadow (marks are darker than the level around them), lies round the page
# only where a sharp drop parts them (a vignette's corners are left to the ink map), and strips of it
# between a page's corner and the frame's edge, which the closing fills, go with it (`_off_page`); a
# shadow over most of the frame, too large to lie round a page, is lit again (SHADE_LIGHT). 11: an
# image under SMALL_SIDE is enlarged by bicubic interpolation instead of bilinear (`_resize_to_work`),
# and so is a digit smaller than MNIST's box when it is fitted into it (`digit_to_mnist`).
PREPROCESSING_VERSION = 11
# Models trained on fields of this version or later read today's without a warning: versions 3 to 11
# changed only images already in MNIST's format or under 64 px, digits under 20 px, digits cropped
# tight, digits on ruled paper or in printed cells, photos of a page on a desk, with a vignette or a
# shadow over most of it, light ink filling a dark frame and dark ink massed on one side of it, small
# bitmaps stretched to fill, and bold light strokes flush with a dark canvas, and a model trained on
# version 2 reads those as well or better with them (docs/experiments.md, "Images already in MNIST's
# format", "Ruled paper in a photo", "Dataset formats", "A digit flush with three edges", "Page lines
# the transform missed", "Digits stretched to fill their frame", "Bold white digits flush with a
# black canvas's edges", "Combs and small boxes round one digit", "Desks under their own light",
# "Tiny images enlarged by bicubic interpolation", "Small digits enlarged into their box"); training's
# renders of digits are the same, but for those on ruled paper, in form cells or on a desk among the
# harder conditions (`--conditions`), the small bitmaps, and real training sets stored as small images
# (CVL's 28x28, optdigits' 32x32).
PREPROCESSING_COMPATIBLE = 2
FIELD = 28  # MNIST image side
BOX = 20  # MNIST fitted each digit into a 20x20 box, preserving aspect ratio
# A 28x28 image is already in MNIST's format and read as it is (`_as_field`) when the ink (over
# FIELD_INK of 255 above the background) spans FIELD_BOX pixels on its longer side and its centre of
# mass lies within FIELD_CENTRE both ways (pixel coordinates), and FIELD_SATURATED of its pixels or
# more are saturated (250 or more). Measured at FIELD_INK 16: the box of every one of MNIST's 70,000
# digits is 20 px, their centres 13.5-14.5 (MNIST shifted by whole pixels), and 99.7% of them have
# that share saturated (the median 0.39); `to_mnist`'s fields of the 26,880 real digits of
# ../shared/data/real: 20-21 px, centres 13.42-13.58, 94.5% of them with the share. CVL's digits as
# 28x28 images are boxed the same but centred by their box (centres 11.8-14.7, 1st-99th percentile)
# and anti-aliased to a grey core (at most 0.08 saturated): 391 of `cvl-valid`'s centres pass, and
# read as they are, three seeds of the shipped recipe rejected more of them (1,117 read right of
# 1,173 against 1,137 preprocessed); the saturated share lets 5 of them pass.
FIELD_INK = 16
FIELD_BOX = (19, 21)
FIELD_CENTRE = (13.4, 14.5)
FIELD_SATURATED = 0.05
# ...and FIELD_GREY of its ink or more is grey (over FIELD_INK, under 250): MNIST's strokes are
# anti-aliased (the share is over 0.22 for 99.9% of its 70,000 digits; 24 have under 0.1), a bitmap of
# two levels is not. `cvl-valid`'s digits thresholded at 100 that passed the other tests read 92.3%
# right as they were and 95.3% preprocessed; MNIST's test digits so, 99.1% and 99.2% (docs/experiments.md,
# "Dataset formats").
FIELD_GREY = 0.1
# ...and its range spans FIELD_CONTRAST of full scale or more, stretched to full (a dim export at 30%:
# 95.3% of those `cvl-valid` digits read right preprocessed, 97.3% so; "Dataset formats").
FIELD_CONTRAST = 0.2
MAX_BYTES = 20 * 1024 * 1024  # larger files are refused unread
MAX_PIXELS = 50_000_000  # refused before decoding; Pillow's own bomb limit is ~89M (and warns at 89M/2)
# The formats decoded; Pillow knows many more (EPS, which runs Ghostscript, among them), refused unread.
# (Pillow's JPEG reader also opens the multi-picture JPEGs of phone cameras, as format "MPO".) "PPM" is
# Netpbm's PBM, PGM and PPM, as datasets ship digits; AVIF is Pillow's own. HEIC/HEIF, as iPhones take
# photos, is read by pillow-heif where the `heic` extra installed it (its wheels are GPLv2: optional).
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM", "AVIF")
# ISO base media files (HEIF, AVIF) open with an `ftyp` box at byte 4; these brands are HEIF's HEVC
# images, which Pillow cannot read without pillow-heif.
HEIC_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs")
WORK_SIDE = 640  # images are analysed with their longer side at most this (decoding uses draft for JPEG)
SMALL_SIDE = 64  # images with a shorter side below this are enlarged to about it (see `_resize_to_work`)
LINE_SIDE = 160  # ...but a line of digits keeps its shorter side at least this, within WORK_SIDE^2 pixels
# A digit cropped tight to its ink (`_cropped_tight`): a bitmap under TIGHT_SIDE pixels a side, or an
# image whose dark side of Otsu's threshold reaches within TIGHT_EDGE of its side of every edge but
# makes under TIGHT_BORDER of the pixels of its border (what lies around a page, a cast shadow or a
# vignette makes most of it), with no two lines across it one way (ruled paper). Its background is
# one level, and it is not searched for what lies around a page nor for ruled paper's lines: its own
# strokes, as wide as a tenth of it, were taken for both (docs/experiments.md, "Bitmaps cropped tight"
# and "Scans cropped tight").
TIGHT_SIDE = 32
# A square image of at most STRETCHED_SIDE pixels a side whose ink reaches within STRETCHED_EDGE of its
# pixels of all four edges is a digit stretched to fill its frame (USPS's and Semeion's 16x16 bitmaps
# store digits so), or a digit about as wide as high cropped tight: its ink is fitted into the field
# STRETCHED_ASPECT as wide as high, the median of MNIST's and cvl-train's training digits (0.80 and
# 0.75), and no piece at its edge is taken for a neighbour's. On `cvl-valid` digits in USPS's and
# Semeion's framing, 7,000 each (`benchmarks/real_handwriting.py`'s FORMATS): 95.9 -> 96.4% and
# 94.6 -> 95.4% read right; its digits as wide as high (0.85-1.15), cropped tight to 16 px: 97.2%
# either way (docs/experiments.md, "Digits stretched to fill their frame").
STRETCHED_SIDE = 32
STRETCHED_ASPECT = 0.75
STRETCHED_EDGE = 1.5  # pixels of the image as given: its edge pixels, half covered, may fall under the ink's threshold
TIGHT_EDGE = 0.1
TIGHT_BORDER = 0.3
TIGHT_LINED = 3  # see `_cropped_tight`: straight lines apart one way that make a crop lined paper
PAGE_NEAR = 0.1  # see `_ink_image`: ink this near two opposite edges is searched for a page's lines
MNIST_STROKE = 0.12  # MNIST stroke width as a fraction of the digit's longer side (about 2.4 of 20 px)
# MNIST's own strokes range widely: measured as `stroke_width` does, over MNIST_STROKE times the
# digit's side, 1% of 5,000 training digits are under 0.64, 10% under 0.79, 90% under 1.47 and 99%
# under 1.96. Only strokes outside that range are made thinner or thicker, and only into it.
THIN_ABOVE = 2.0  # thicker strokes (a fat canvas brush) are thinned to THIN_TO (MNIST's 90th percentile)
THIN_TO = 1.5
# ...but thinning takes at most THIN_AT_MOST of MNIST's stroke width off a stroke (half from each side).
# With a brush so fat that a digit's loops fill in, the "stroke" is the whole blob, and eroding it to
# THIN_TO left only the blob's cores (an 8 became two dots): with the shipped model held fixed, 4,000
# canvases of validation digits misread or rejected 52 -> 37 (seeds 1 and 2 of its recipe: 55 -> 43,
# 49 -> 38); at most 1.33 / 0.83 / 0.67 / 0.5 stroke widths: 41 / 39 / 39 / 41. Of 2,000 validation
# photos 12 -> 11 (13 -> 12 and 14 -> 13 for the seeds), and numbers the same.
THIN_AT_MOST = 1.0
THICKEN_BELOW = 0.6  # thinner strokes (a fine pen on a big photo) are grown to 1.0 (MNIST's median: 1.1)
ONE_LIKE = 0.25  # a field whose ink spreads less than this across its main axis as along it reads as a 1
# When between this share and its complement of the pixels are dark (Otsu), ink and paper are nearly as
# common, and the corners tell which is paper (`_polarity`): a bold digit cropped tight to its ink.
DENSE_INK = 0.3
MIN_CONTRAST = 0.12  # ink weaker than this fraction of full contrast is never ink (texture, noise)
RELATIVE_INK = 0.35  # ...nor is ink weaker than this fraction of the image's strongest ink (ruled lines)
# ...but where the strongest ink is faint (pencil photographed: under 2 x MIN_CONTRAST), MIN_CONTRAST
# would cut into the strokes themselves: there the floor is this share of the strongest ink.
FAINT_SHARE = 0.5
# Strongest ink under MIN_CONTRAST (pencil 9-12% darker than the paper, photographed) is ink only
# where it is one mark: the biggest piece of what passes the threshold holds this share of it or more
# (`_one_faint_mark`). On 400 such photos of `cvl-valid` digits and 600 blank pages
# (`synth.blank_page`) whose strongest ink was that faint, the share was 0.62 or more for 95% of the
# digits and 0.35 or less for every page (docs/experiments.md, "Faint pencil").
FAINT_WHOLE = 0.5
FAINT_INK = 0.04  # ...and at least this strong
# Ink is measured against the room the paper leaves it (its level for dark ink, 255 less it for light),
# but never less than this many levels: a blank sheet of bright paper taken for a board with light ink
# (its polarity is a toss-up) had 30-45 levels of room, so its sensor noise became "chalk" at 0.15-0.2
# of full contrast: with 32, 3 of 2,000 blank pages (`synth.blank_page`) were still read as numbers
# after the levelling; none with 64. Photographed paper and boards leave far more.
MIN_HEADROOM = 64.0
SMALL_INK_PATCH = np.ones((2, 2), np.uint8)  # see `_ink_map`: the strongest ink of a small digit
SMALL_INK_RATIO = 1.5
# A desk around the page, or a cast shadow (`_off_page`): regions darker than the page by this share of
# its level, of at least PAGE_AROUND_AREA of the image, along at least PAGE_AROUND_EDGE of one image
# edge, with the page left at least PAGE_AT_LEAST of the image; strokes taken away by a closing
# PAGE_SMOOTH of the reduced image's side wide. Gentler shades are the ink map's to level.
PAGE_CONTRAST = 0.25
PAGE_EDGE_CONTRAST = 0.1
PAGE_AROUND_AREA = 0.01
PAGE_AROUND_EDGE = 0.3
PAGE_AT_LEAST = 0.3
PAGE_SMOOTH = 0.1
# A cast shadow is deep (a disc SHADE_DEPTH of the image's shorter side across fits in it) or lies
# around the page (over SHADE_AROUND of the image's border). Of 300 scans of `cvl-valid` digits
# cropped tight, 103 had a shallower one, their strokes closed into a blob (inscribed 0.12-0.26 of
# the side, 10th-90th percentile; cast shadows 0.26 and more, 0.51 at the 10th percentile).
SHADE_DEPTH = 0.2
SHADE_AROUND = 0.5
# A region too large to lie round a page (over 1 - PAGE_AT_LEAST of the frame) is lit as a shadow over
# most of the page where it keeps this share of the page's level or more (cast shadows keep 0.4-0.7 in
# `synth.with_a_shadow`); darker, it is a dark canvas round light strokes, and is left as it is.
SHADE_LIGHT = 0.25
# A digit whose ink spans fewer working pixels than this in an image that was reduced is read again
# from the decoded image around it (`to_mnist`), with this share of its size as margin on each side.
SMALL_DIGIT = 48
SMALL_DIGIT_MARGIN = 1.0
PAGE_WIDE = 0.5  # see `_off_page`: of the light side, the share that a page keeps through an opening
# ...and of it, the share that the image as it is (not closed) keeps through the same opening: on
# 255 rendered photos of cvl-valid digits in which `_off_page` found a desk, 0.38 or more (99% over
# 0.48); on white digits drawn flush with three edges of a black canvas, 0.15 or less where their
# strokes are thin, but up to 0.51 where they are bold (a fifth of the canvas wide), whose black was
# then taken for a desk around them and their polarity read as dark ink (docs/experiments.md, "Bold
# white digits flush with a black canvas's edges").
PAGE_WIDE_AS_IS = 0.6
# ...unless its light side is convex: of those photos, 99% fill 0.917 of their light side's convex hull
# or more (2 of the 1,000 desk photos of `benchmarks/real_handwriting.py` fall under the share above:
# a small page filled by its digit, 0.97 and 0.99; of 600 desk and 600 shadow photos where a region
# was found, none is under 0.9 and under 0.6 of the share); those canvases 0.52-0.86.
PAGE_CONVEX = 0.9
PAGE_REACH = 2.0  # see `_off_page`: a region reaching this many times its depth from the edges is a stroke
PAGE_SCRAP = 0.25  # a mark touching what lies around the page, under this share of the biggest: a scrap of it
# In the image of one digit, a mark that touched the printed lines taken off, under STUB_AREA of the
# biggest's pixels and beside it (no column in common), is what the lines leave: a comb's short teeth,
# a box's corner (docs/experiments.md, "Page lines the transform missed").
STUB_AREA = 0.15
SHADE_GRAIN = 16.0  # a mark in such a region is darker than its level by this many median deviations too
SHADE_FLAT = 0.15  # a marked region whose level varies less than this share of it is paper in a shadow
# ...and so is one whose level drops by this share of the page's across its edge, within SHADE_RING px
# of the reduced image on each side: a cast shadow's edge under a lighting gradient of its own. On 400
# photos each (`synth.with_a_shadow`, `synth.with_a_vignette`), the uneven regions' drop was 0.10 or
# more for 95% of the shadows and 0.053 or less for 95% of the vignettes (docs/experiments.md, "A desk
# around the page").
SHADE_EDGE = 0.08
SHADE_RING = 2
# See `_lit_by_ink`: a fitted lighting surface spanning this many levels or more is the ink's doing
# where the paper's side of the blocks follows under this share of it. Measured on rendered photos
# of cvl-valid digits under every `synth.CONDITIONS` (a one-off check): in each of the 551 of 2,011
# images levelled with such a surface, the brightest paper followed by half or more; in digits flush
# with three edges, by 0.05 or less.
INK_LIT_RANGE = 40.0
INK_LIT_FOLLOWS = 0.25
INK_LIT_FLAT = 16.0  # levels between the 10th and 75th percentiles of the darkest board, at most
VIGNETTE = 40.0  # levels: a lighting surface that bends less than this is levelled by a plane
TREND_GRID = 16  # the paper's lighting gradient is fitted to the means of this many blocks a side
BACKGROUND_SIDE = 96  # the background is estimated on the image reduced by a whole factor to about this short side
NEIGHBOUR_WIDTH = 0.5  # see `_without_neighbours`
NEIGHBOUR_MASS = 0.35
SPECK_HEIGHT = 0.3  # of the line's height: `read` drops lighter marks below it (0.4 lost broken digits)
# `read` fits a group wider or taller than this (working pixels) into its field from a copy reduced
# by a whole factor: thickening a thin stroke to MNIST's width costs as the square of the stroke's
# radius, and a page of graph paper, one group 640 px high cut into 133 pieces, took 8.7 s (1.0 s
# now). Numbers are smaller: the largest group of 2,500 photographed numbers of validation digits
# was 297 px, so none of them reads differently.
READ_SIDE = 320


class ImageError(Exception):
    """An image could not be read or holds nothing usable; the message says which and why."""


# --- 1. decoding ---------------------------------------------------------------------------------


def quiet_decoder_warnings() -> None:
    """Silence Pillow's warnings about damaged files that it still reads ("Truncated File Read",
    "Corrupt EXIF data"): each file is either read or refused with an ImageError naming it, and the
    warnings, printed with Pillow's own source lines, look like a crash. For the applications (the
    CLI and each server process); a library user's warning filters are left alone."""
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


# Limits on a file's structure, checked before Pillow parses it: files built to make decoding slow. A
# 512x512 progressive JPEG of ~170,000 empty scans took Pillow 4.4 s (2 MB) and 43 s at the byte cap;
# 500,000 empty JPEG comment markers 1.1 s; a GIF comment extension of 2 MB 4.2 s (4 MB: 12.4 s, since
# Pillow joins its sub-blocks one by one). Cameras and encoders write a few dozen markers and up to
# about a dozen scans (progressive), a few KB of GIF extensions.
MAX_JPEG_SCANS = 100
MAX_JPEG_MARKERS = 5000
MAX_GIF_EXTENSION_BYTES = 256 * 1024


def _check_structure(data: bytes, name: str) -> None:
    """Refuse JPEG and GIF files whose structure alone would make decoding slow (see MAX_JPEG_SCANS)."""
    if data[:2] == b"\xff\xd8":
        scans, markers = _jpeg_counts(data)
        if scans > MAX_JPEG_SCANS:
            raise ImageError(f"{name}: more JPEG scans than the limit of {MAX_JPEG_SCANS}")
        if markers > MAX_JPEG_MARKERS:
            raise ImageError(f"{name}: more JPEG markers than the limit of {MAX_JPEG_MARKERS}")
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        extension = _gif_extension_bytes(data)
        if extension > MAX_GIF_EXTENSION_BYTES:
            raise ImageError(
                f"{name}: a GIF with {extension} bytes of extensions (comments, application data), more than "
                f"the limit of {MAX_GIF_EXTENSION_BYTES}"
            )


# Where a scan's entropy-coded data ends: a 0xFF not followed by a stuffed 0x00, a restart marker or fill.
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _jpeg_counts(data: bytes) -> tuple[int, int]:
    """A JPEG's scans and marker segments, walking its segments by their lengths and skipping each scan's
    data; stops counting past the limits (a damaged file ends the walk: the decoder reports it)."""
    pos, scans, markers = 2, 0, 0
    while pos + 4 <= len(data) and scans <= MAX_JPEG_SCANS and markers <= MAX_JPEG_MARKERS:
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # end of image
            break
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        markers += 1
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan: its entropy-coded data follows the header
            scans += 1
            end = _SCAN_END.search(data, pos)
            if end is None:
                break
            pos = end.start()
    return scans, markers


def _gif_extension_bytes(data: bytes) -> int:
    """Bytes in a GIF's extension blocks up to its first image (all Pillow reads when it opens one):
    walks the block structure; a truncated file ends the walk (the decoder reports it)."""
    pos = 13
    flags = data[10] if len(data) > 10 else 0
    if flags & 0x80:  # a global colour table
        pos += 3 << ((flags & 7) + 1)
    total = 0
    while pos + 1 < len(data) and data[pos] == 0x21:  # an extension: label, then sub-blocks
        pos += 2
        while pos < len(data) and data[pos]:
            total += data[pos]
            pos += data[pos] + 1
            if total > MAX_GIF_EXTENSION_BYTES:
                return total
        pos += 1
    return total


def open_image(data: bytes, name: str) -> Any:
    """Encoded image bytes -> a PIL image, its header read and checked (format, size, pixel cap) but its
    pixels not yet decoded: cheap, and every problem so far an ImageError naming ``name``."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError(f"{name}: empty file")
    if len(data) > MAX_BYTES:
        raise ImageError(f"{name}: {len(data)} bytes is more than the limit of {MAX_BYTES}")
    _check_structure(data, name)
    formats = FORMATS + _heif_formats(data, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap is checked below
            pil = Image.open(io.BytesIO(data), formats=formats)
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: more pixels than the limit of {MAX_PIXELS} (decompression bomb?)") from None
    except UnidentifiedImageError:
        head = data[:64].lstrip().lower()
        kind = "an SVG or XML file" if head.startswith((b"<svg", b"<?xml")) else None
        kind = kind or ("a PDF" if head.startswith(b"%pdf") else None)
        kind = kind or "not a supported format: " + ", ".join(FORMATS)
        raise ImageError(f"{name}: not an image ({kind})") from None
    except Exception as e:  # Pillow raises many types on malformed headers
        raise ImageError(f"{name}: cannot read the image header ({e})") from None
    w, h = pil.size
    if w < 1 or h < 1:
        raise ImageError(f"{name}: image has no pixels ({w}x{h})")
    if w * h > MAX_PIXELS:
        raise ImageError(f"{name}: {w}x{h} pixels is more than the limit of {MAX_PIXELS} (decompression bomb?)")
    return pil


def _heif_formats(data: bytes, name: str) -> tuple[str, ...]:
    """("HEIF",) for a HEIF file (an iPhone's photo) where pillow-heif can read it; () for any other
    file. A HEIC photo without pillow-heif is an ImageError saying what to install."""
    if data[4:8] != b"ftyp":
        return ()
    brands = data[8:12], *(data[i : i + 4] for i in range(16, min(len(data), 64), 4))
    if data[8:12] in (b"avif", b"avis"):  # Pillow's own AVIF reader
        return ()
    if _heif_registered():
        return ("HEIF",)
    if any(b in HEIC_BRANDS for b in brands):
        raise ImageError(
            f"{name}: a HEIC/HEIF photo, which needs pillow-heif: pip install 'digitrec[heic]' "
            "(or save the photo as JPEG)"
        )
    return ()


@functools.cache
def _heif_registered() -> bool:
    """Whether pillow-heif is installed, its opener then registered with Pillow (once a process)."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener(thumbnails=False)
    return True


def _decode(pil: Any, name: str, own: bool = True) -> tuple[np.ndarray, bool, float]:
    """PIL image -> gray (h, w) in [0, 255], transparency composited to keep the ink visible: uint8 for
    8-bit images without transparency (most photos and scans), float32 otherwise; whether it was
    composited (a transparent background is flat: no lighting to take off); and its pixels per pixel
    of the image (below 1 when a large image is decoded at reduced size).

    ``own``: the image was opened here, from a file or bytes. A caller's PIL image is left as it was
    given: decoded at full size, its current frame restored afterwards.
    """
    from PIL import Image

    full_side = max(pil.size)  # the longer side: the same whatever the EXIF orientation
    frame = pil.tell()
    try:
        if frame:
            pil.seek(0)  # animated GIF / multi-page TIFF: the first frame
        if own and pil.format in ("JPEG", "MPO"):
            # libjpeg decodes colour JPEGs straight to gray (its luma is the same 0.299/0.587/0.114 mix as
            # convert("L")), and a large one at 1/2, 1/4 or 1/8 scale: fast and small.
            pil.draft("L", (2 * WORK_SIDE, 2 * WORK_SIDE) if max(pil.size) > 2 * WORK_SIDE else pil.size)
        pil.load()
        image = _upright(pil)
        if frame and image is pil:
            image = pil.copy()  # the first frame's pixels: seeking back below reloads the caller's frame
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: too many pixels ({e})") from None
    except Exception as e:  # truncated or corrupt data: Pillow raises OSError, SyntaxError, ValueError...
        raise ImageError(f"{name}: cannot decode the image ({e})") from None
    finally:
        if frame:
            pil.seek(frame)
    try:
        gray, composited = _to_gray(image)
    except (ValueError, OSError) as e:  # a mode Pillow cannot convert (LAB, La...)
        raise ImageError(f"{name}: cannot read pixels of mode {image.mode} ({e})") from None
    return gray, composited, max(gray.shape) / full_side


def _upright(pil: Any) -> Any:
    """The decoded image turned as its EXIF orientation says: the image itself when it says nothing to
    turn (`ImageOps.exif_transpose` returns a copy then: 196 MB for a 7,000-pixel-square RGB PNG)."""
    from PIL import ExifTags, ImageOps

    return pil if pil.getexif().get(ExifTags.Base.Orientation, 1) == 1 else ImageOps.exif_transpose(pil)


def _reduce_factor(w: int, h: int) -> int:
    """The whole factor a large image is reduced by (box average) before its pixels become arrays:
    down to about 4 x WORK_SIDE^2 pixels, at least twice the working image's resolution on each side
    (a long line of digits keeps more than WORK_SIDE on its long side, see `_resize_to_work`)."""
    return int(np.sqrt(w * h)) // (2 * WORK_SIDE)


def _to_gray(pil: Any) -> tuple[np.ndarray, bool]:
    """A decoded PIL image -> gray [0, 255] and whether transparency was composited (see `_decode`).

    16-bit, 32-bit and float images, and images with transparency, become float32 arrays (4 to 16
    bytes a pixel): when large, they are reduced first (`_reduce_factor`), so that a 7,000-pixel-square
    PNG or TIFF that compresses to 100-300 KB does not cost gigabytes. 8-bit images stay uint8 at full
    size (1 byte a pixel), as JPEGs are decoded at reduced size anyway.
    """
    factor = _reduce_factor(pil.width, pil.height)
    if pil.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        if pil.mode != "F":
            pil = pil.convert("I")  # exact; Pillow reduces 32-bit modes but not 16-bit ones
        top = float(pil.getextrema()[1])  # of the whole image, before reducing
        a = np.array(pil.reduce(factor) if factor >= 2 else pil, dtype=np.float32)  # writable: scaled in place
        if not np.isfinite(a).all() or not np.isfinite(top):  # NaN and inf survive the box average
            raise ValueError("NaN or infinite pixel values")
        if top > 255:  # 16-bit samples
            a *= 255.0 / 65535.0
        elif pil.mode == "F" and top <= 1.0:  # floats in [0, 1]
            a *= 255.0
        return np.clip(a, 0, 255, out=a), False
    if pil.mode == "LAB":
        return np.asarray(pil.getchannel("L")), False  # its lightness
    has_alpha = pil.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (pil.mode == "P" and "transparency" in pil.info)
    if not has_alpha:
        return np.asarray(pil if pil.mode == "L" else pil.convert("L")), False
    rgba = pil if pil.mode == "RGBA" else pil.convert("RGBA")  # convert() copies even to the same mode
    if factor >= 2:  # reduced before going to float (16 bytes a pixel) to about 4 x WORK_SIDE^2 pixels
        rgba = rgba.reduce(factor)
    a = np.asarray(rgba, dtype=np.float32)
    alpha = a[..., 3] / 255.0
    gray = a[..., :3] @ np.float32([0.299, 0.587, 0.114])
    return (gray, False) if alpha.min() >= 0.99 else (_composite(gray, alpha), True)


def _composite(gray: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Gray [0, 255] with alpha [0, 1] -> opaque gray, onto the background that contrasts with the ink.

    Ink on a transparent canvas: black strokes land on white and white strokes on black, so either
    way the ink stays visible.
    """
    opaque = alpha > 0.5
    ink_level = float(np.median(gray[opaque])) if opaque.any() else 0.0
    background = 255.0 if ink_level < 128 else 0.0
    return np.clip(gray * alpha + background * (1 - alpha), 0, 255)


def load_image(image: Any, name: str | None = None) -> np.ndarray:
    """Decode a path, bytes, PIL image or array into float32 gray (h, w) in [0, 255].

    Arrays may be (h, w), (h, w, 1|3|4), uint8 in [0, 255], float in [0, 1] or bool (True: white).
    A large JPEG file comes out at 1/2, 1/4 or 1/8 of its size, and so does a large image with
    transparency. Every problem is an ImageError that names the input.
    """
    return _gray(image, name)[0].astype(np.float32, copy=False)


def input_name(image: Any, name: str | None = None) -> str:
    """How errors name an input: the caller's ``name``, else a file's path, else "array" or "image"."""
    if name:
        return name
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    return "array" if isinstance(image, np.ndarray) else "image"


def _gray(image: Any, name: str | None) -> tuple[np.ndarray, bool, float]:
    """`load_image`, keeping 8-bit gray as uint8 (the ink map is faster on it); whether a transparent
    background was composited, and the decoded pixels per image pixel (see `_decode`)."""
    from PIL import Image

    name = input_name(image, name)
    if isinstance(image, np.ndarray):
        return (*_array_gray(image, name), 1.0)
    if isinstance(image, (str, os.PathLike)):
        image = read_image_file(image, name)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _decode(open_image(bytes(image), name), name)
    if isinstance(image, Image.Image):
        w, h = image.size
        if w * h > MAX_PIXELS:
            raise ImageError(f"{name}: {w}x{h} pixels is more than the limit of {MAX_PIXELS}")
        return _decode(image, name, own=False)
    raise ImageError(f"cannot read an image from {type(image).__name__}: give a path, bytes, PIL image or array")


def read_image_file(path: str | os.PathLike, name: str) -> bytes:
    """The bytes of the image file at ``path``, at most MAX_BYTES of them. Only a regular file is read:
    a FIFO would block the reader for ever and a device such as /dev/zero never ends (both are found
    by `digitrec predict DIR` when named like images). Opened without blocking, then checked."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a pipe, socket or device"
                raise ImageError(f"{name}: not a regular file ({kind})")
            if info.st_size > MAX_BYTES:
                raise ImageError(f"{name}: {info.st_size} bytes is more than the limit of {MAX_BYTES}")
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(MAX_BYTES + 1)
        finally:
            os.close(fd)
    except OSError as e:
        raise ImageError(f"{name}: cannot read: {e.strerror or e}") from None
    if len(data) > MAX_BYTES:  # it grew after the check
        raise ImageError(f"{name}: more bytes than the limit of {MAX_BYTES}")
    return data


def _array_gray(a: np.ndarray, name: str) -> tuple[np.ndarray, bool]:
    if a.dtype.kind not in "uifb":
        raise ImageError(f"{name}: arrays must hold numbers, got dtype {a.dtype}")
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)) or a.size == 0:
        raise ImageError(f"{name}: expected a 2-D grayscale or (h, w, 3|4) color array, got shape {a.shape}")
    if a.shape[0] * a.shape[1] > MAX_PIXELS:
        raise ImageError(f"{name}: {a.shape[1]}x{a.shape[0]} pixels is more than the limit of {MAX_PIXELS}")
    if a.dtype == bool:
        a = a.astype(np.uint8) * np.uint8(255)  # a mask: True is white
    if a.dtype == np.uint8 and a.ndim == 2:
        return a, False
    was_float = a.dtype.kind == "f"
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise ImageError(f"{name}: the array holds NaN or infinite values")
    if was_float and a.max(initial=0) <= 1.0 and a.min(initial=0) >= 0:
        a = a * 255.0  # float images in [0, 1]
    a = np.clip(a, 0, 255)
    if a.ndim == 2:
        return a, False
    gray = a[..., :3] @ np.float32([0.299, 0.587, 0.114])
    if a.shape[-1] == 4 and a[..., 3].min() < 0.99 * 255:
        return _composite(gray, a[..., 3] / 255.0), True
    return gray, False


# --- 2-3. ink --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    """A group of ink pixels: its box (x, y, w, h) in the working image and its ink mass."""

    x: int
    y: int
    w: int
    h: int
    mass: float
    labels: tuple[int, ...]  # connected-component labels that make it up


@dataclass(frozen=True)
class InkImage:
    """An image as ink strength in [0, 1] (0: background), with its mask and components."""

    ink: np.ndarray  # float32 (h, w) in [0, 1]
    mask: np.ndarray  # bool (h, w): pixels that count as ink
    labels: np.ndarray  # int32 (h, w): connected component of each ink pixel, 0 for none
    components: tuple[Component, ...]  # kept components, left to right
    scale: float  # working image pixels per original pixel
    dark_ink: bool  # True: dark ink on light paper


def _resize_to_work(gray: np.ndarray, line: bool = False) -> tuple[np.ndarray, float]:
    """The image at the size it is analysed at, and its scale. ``line``: a line of digits, which may
    be long: its digits, as tall as its shorter side at most, keep LINE_SIDE pixels where the pixel
    budget allows (with the longer side at WORK_SIDE, 80 digits in one line became 9 px high)."""
    import cv2

    h, w = gray.shape
    if min(h, w) < SMALL_SIDE:
        # A tiny image (a 16x16 bitmap, an MNIST-sized array) is enlarged by a whole factor first, so that
        # its strokes are several pixels wide when they are measured, thinned or grown. Bicubic, not
        # bilinear: a pixel-wide stroke keeps its shape instead of a diamond's ramps (all 7,000 cvl-valid
        # digits in USPS's 16x16 framing 96.4 -> 96.9% read right, as small bitmaps 94.6 -> 94.9%; a
        # larger factor, a blur or Lanczos gave nothing more; docs/experiments.md, "Tiny images enlarged
        # by bicubic interpolation").
        f = min(-(-SMALL_SIDE // min(h, w)), max(1, WORK_SIDE // max(h, w)))
        if f > 1:
            big = cv2.resize(gray, (w * f, h * f), interpolation=cv2.INTER_CUBIC)
            if big.dtype != np.uint8:  # as 8-bit saturates: no overshoot past the image's own range
                np.clip(big, float(gray.min()), float(gray.max()), out=big)
            return big, float(f)
        return gray, 1.0
    scale = min(1.0, WORK_SIDE / max(h, w))
    if line:
        scale = max(scale, min(1.0, LINE_SIDE / min(h, w), WORK_SIDE / float(np.sqrt(h * w))))
    if scale < 1.0:
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return gray, scale


def _percentiles_u8(a: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """``np.percentile(a, qs)`` (linear interpolation) of a uint8 array, from its histogram: no sort."""
    import cv2

    counts = cv2.calcHist([np.ascontiguousarray(a)], [0], None, [256], [0, 256]).ravel()  # np.bincount: 2x slower
    return _percentiles_hist(counts, qs)


INK_STEPS = 4096  # the ink map's percentiles are read from a histogram of this many steps per unit of ink


def _ink_percentiles(ink: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """Percentiles of an ink map (values in [-1, 1]) to within 1/INK_STEPS, from a histogram: a sort
    of every pixel cost more than the rest of the ink map."""
    q = np.rint(ink.ravel() * INK_STEPS).astype(np.int32)
    q += INK_STEPS  # [0, 2 * INK_STEPS]
    np.clip(q, 0, 2 * INK_STEPS, out=q)
    return [v / INK_STEPS - 1.0 for v in _percentiles_hist(np.bincount(q, minlength=2 * INK_STEPS + 1), qs)]


def _percentiles_hist(counts: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """Percentiles (numpy's linear method) of the values 0..len(counts)-1 counted by ``counts``."""
    cdf = np.cumsum(counts)
    n = int(cdf[-1])
    out = []
    for q in qs:
        pos = q / 100 * (n - 1)
        k = int(pos)
        lo, hi = np.searchsorted(cdf, [k, min(k + 1, n - 1)], side="right")  # the k-th, (k+1)-th values
        out.append(float(lo + (pos - k) * (hi - lo)))
    return out


def _paper_trend(g: np.ndarray) -> tuple[float, float]:
    """The paper's lighting gradient in ``g`` (uint8, at least TREND_GRID pixels a side): the slopes
    (levels per image width, per image height) of a plane fitted to the means of a TREND_GRID x
    TREND_GRID grid of blocks, refitted twice without the blocks that ink pulls off it (over three
    robust standard deviations)."""
    coef = _robust_fit(_trend_design(*g.shape), _block_means(g).ravel())
    return float(coef[1]), float(coef[2])


def _block_means(g: np.ndarray) -> np.ndarray:
    """The means of a TREND_GRID x TREND_GRID grid of blocks of ``g``: float64 (TREND_GRID, TREND_GRID)."""
    import cv2

    h, w = g.shape
    # Whole blocks, OpenCV's fast path: up to TREND_GRID - 1 edge rows or columns are left out.
    bh, bw = h // TREND_GRID, w // TREND_GRID
    v = cv2.resize(g[: bh * TREND_GRID, : bw * TREND_GRID], (TREND_GRID, TREND_GRID), interpolation=cv2.INTER_AREA)
    return v.astype(np.float64)


def _robust_fit(a: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Least squares of ``v`` on the columns of ``a``, refitted twice without the values off the fit by
    over three robust standard deviations (the blocks that ink pulls off the paper's level)."""
    keep = np.ones(len(v), bool)
    for _ in range(3):
        ak = a[keep]
        coef = np.linalg.solve(ak.T @ ak, ak.T @ v[keep])  # least squares in a few unknowns (lstsq: 3x the time)
        r = np.abs(v - a @ coef)
        keep = r <= 3.0 * 1.4826 * _percentile(r[keep], 50) + 1.0
        if keep.sum() < 3 * TREND_GRID:
            break  # too few blocks left to trust another fit
    return coef


def _plane(slope: tuple[float, float], h: int, w: int) -> np.ndarray:
    """The plane of `_paper_trend`'s ``slope`` (levels per image width, per image height) over an
    (h, w) image, zero at its centre: float32 (h, w)."""
    yy, xx = _centred(h, w)
    return np.float32(slope[0]) * xx + np.float32(slope[1]) * yy


def _centred(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's row (h, 1) and column (1, w), in units of the image's height and width from its
    centre: float32."""
    yy = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / h - 0.5
    xx = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / w - 0.5
    return yy, xx


def _paper_curve(g: np.ndarray) -> np.ndarray | None:
    """The paper's lighting as a quadratic surface (a vignette, a flash's fall-off towards the corners),
    fitted as `_paper_trend` fits its plane: its six coefficients (1, x, y, x^2, xy, y^2, in units of
    the image's width and height from its centre); None, so that a plane does, unless the corners are
    VIGNETTE / 4 levels darker than the middles of the edges and the surface bends by VIGNETTE levels.

    A plane cannot follow light that falls off towards every corner: the background's window, cut
    short at the corners, took their darker paper for ink, and a photo darkened by a third at its
    corners read "not a digit" (docs/experiments.md, "Vignettes").
    """
    v = _block_means(g)
    # A vignette's mark: the corners darker than the middles of the edges. A plane (a lighting gradient
    # in any direction) moves the two by the same amount, so only light that falls off towards every
    # corner opens this gap (and ink or an object has to lie in the corners to fake it). At VIGNETTE / 2
    # a weaker vignette was levelled by a plane, and the light middle it left was read as light ink
    # on a dark ground (docs/experiments.md, "Weak vignettes").
    m = TREND_GRID // 2
    corners = np.mean([c.mean() for c in (v[:2, :2], v[:2, -2:], v[-2:, :2], v[-2:, -2:])])
    middles = [v[:2, m - 1 : m + 1], v[-2:, m - 1 : m + 1], v[m - 1 : m + 1, :2], v[m - 1 : m + 1, -2:]]
    if np.mean([c.mean() for c in middles]) - corners < VIGNETTE / 4:
        return None
    # ...and darker than the paper, its typical level, too (by half as much: a vignette darkens the paper
    # towards the middles of the edges as well): light ink filling a dark frame (a white digit drawn
    # large on black) lights the middles of its edges, and its ground is as dark as the corners.
    if _percentiles_u8(g, (50,))[0] - corners < VIGNETTE / 4:
        return None
    a = _curve_design(*g.shape)
    coef = _robust_fit(a, v.ravel())
    points = np.array([[x * x, x * y, y * y] for x in (-0.5, 0, 0.5) for y in (-0.5, 0, 0.5)])
    bend = points @ coef[3:]
    return coef if float(bend.max() - bend.min()) >= VIGNETTE else None


def _lit_by_ink(g: np.ndarray, slope: tuple[float, float], curve: np.ndarray | None) -> bool:
    """Whether the lighting fitted to ``g`` (`_paper_trend`'s ``slope``, or `_paper_curve`'s surface)
    is the ink's doing, not the light's: the blocks' means fall towards where the ink is dense (a bold
    digit filling one side of the frame, flush with three of its edges), and the paper there is as
    light as anywhere. Light falls on the paper too: where it darkens the blocks' means, it darkens
    the brightest paper near them as well. For light ink (as the image's levels read before any
    levelling: a white digit drawn on a black canvas) the darkest board is asked, and only where it
    is flat for the most part (INK_LIT_FLAT): in a photo of dark ink that reads as light (its corners
    darkened by a vignette), the darkest of each block is the ink's, and falls short of the lighting
    as the brightest of a light-ink image does.

    Such a surface, taken off, lit the blank side of the frame to a grey between the ink and the paper,
    and the polarity read from the levelled image flipped (a 7 flush with the top, right and bottom
    read as light ink on a dark ground); docs/experiments.md, "A digit flush with three edges".
    """
    import cv2

    a = _trend_design(*g.shape) if curve is None else _curve_design(*g.shape)
    coef = np.array([0.0, *slope]) if curve is None else curve
    surface = a[:, 1:] @ coef[1:]
    surface -= surface.mean()
    if float(np.ptp(surface)) < INK_LIT_RANGE:
        return False
    dark_ink = _polarity(g)[0]
    n = TREND_GRID
    bh, bw = g.shape[0] // n, g.shape[1] // n
    blocks = g[: bh * n, : bw * n].reshape(n, bh, n, bw)
    # The brightest paper in each block and its neighbours (a stroke can fill a block, not three); for
    # light ink, the darkest board.
    near = np.ones((3, 3), np.uint8)
    if dark_ink:
        paper = cv2.dilate(np.ascontiguousarray(blocks.max(axis=(1, 3))), near, borderType=cv2.BORDER_REPLICATE)
    else:
        paper = cv2.erode(np.ascontiguousarray(blocks.min(axis=(1, 3))), near, borderType=cv2.BORDER_REPLICATE)
        lo, hi = np.percentile(paper, (10, 75))
        if hi - lo > INK_LIT_FLAT:
            return False
    fit = a[:, 1:] @ _robust_fit(a, paper.ravel().astype(np.float64))[1:]
    follows = float((fit - fit.mean()) @ surface) / float(surface @ surface)
    return follows < INK_LIT_FOLLOWS


def _curved(coef: np.ndarray, h: int, w: int) -> np.ndarray:
    """`_paper_curve`'s surface over an (h, w) image, less its level at the centre: float32 (h, w)."""
    yy, xx = _centred(h, w)
    c = coef.astype(np.float32)
    return c[1] * xx + c[2] * yy + c[3] * xx * xx + c[4] * xx * yy + c[5] * yy * yy


@functools.lru_cache(maxsize=64)
def _trend_design(h: int, w: int) -> np.ndarray:
    """The plane's design matrix for `_paper_trend`'s blocks: (1, x, y) of each block's centre, in
    units of the image's width and height from its centre, row by row."""
    n = TREND_GRID
    ys = (np.arange(n) + 0.5) * (h // n) / h - 0.5
    xs = (np.arange(n) + 0.5) * (w // n) / w - 0.5
    return np.stack([np.ones(n * n), np.tile(xs, n), np.repeat(ys, n)], 1)


@functools.lru_cache(maxsize=64)
def _curve_design(h: int, w: int) -> np.ndarray:
    """`_trend_design` with the quadratic terms of `_paper_curve`'s surface: (1, x, y, x^2, xy, y^2)."""
    a = _trend_design(h, w)
    return np.concatenate([a, a[:, 1:2] ** 2, a[:, 1:2] * a[:, 2:3], a[:, 2:3] ** 2], axis=1)


def _polarity(levels: np.ndarray, dark: bool | None = None) -> tuple[bool, float]:
    """Whether the ink is dark (else light), and the typical (paper) level, of ``levels`` (uint8): the
    ink is the minority far from the typical level.

    A digit cropped tight to its ink (a scan's digit field, a bitmap stretched to fill its box) can have
    as much ink as paper, and then the minority is a coin toss: there the corners decide, since a digit
    seldom fills them, or ``dark`` where the caller knows, and the paper level is the typical level of
    the paper's side of Otsu's threshold.
    """
    import cv2

    lo, median, hi = _percentiles_u8(levels, (0.5, 50, 99.5))
    dark_ink = (median - lo) >= (hi - median)
    if hi - lo < 2 * 255 * MIN_CONTRAST:
        # No ink worth the name in the tails: none (a blank page), or a small digit in a large frame,
        # under 0.5% of the pixels, whose polarity the noise would decide. The strongest 2x2 patch
        # either way decides instead (its weakest pixel: a lone hot pixel does not count).
        darkest = int(cv2.dilate(levels, SMALL_INK_PATCH).min())
        brightest = int(cv2.erode(levels, SMALL_INK_PATCH).max())
        return median - darkest >= brightest - median, median
    otsu, _ = cv2.threshold(np.ascontiguousarray(levels), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    dark_share = float(np.count_nonzero(levels <= otsu)) / levels.size
    if not DENSE_INK <= dark_share <= 1 - DENSE_INK:
        return dark_ink, median
    k = max(1, min(levels.shape) // 8)
    corners = np.concatenate([c.ravel() for c in (levels[:k, :k], levels[:k, -k:], levels[-k:, :k], levels[-k:, -k:])])
    dark_ink = float(np.median(corners)) > otsu if dark is None else dark
    paper = levels[levels > otsu] if dark_ink else levels[levels <= otsu]
    return dark_ink, _percentiles_u8(paper, (50,))[0]


def _background(levels: np.ndarray) -> tuple[np.ndarray, bool]:
    """The paper's (or board's) level under the ink of ``levels`` (uint8, at least 24 px a side):
    float32, the same shape; and the polarity (True: dark ink).

    Both are read from the paper made level (a plane fitted to the paper taken off): the morphology's
    window, cut short at the image's edge, sees only the lighter side of a lighting gradient there,
    and took the darker edge for ink (a blank gradient from 60 to 200 read "1111"); and a gradient,
    not the ink, could set the tails of the levels the polarity is read from. The background is taken
    on the image reduced by a whole factor (it is smooth; the morphology took 2.4 ms of a 500 px
    photo's 4.1 ms ink map at full size), the polarity at full size. Morphology with a kernel wider
    than any stroke: a closing removes dark strokes (leaving the paper), an opening removes light ones
    (leaving the board); then a box blur as wide.
    """
    import cv2

    h, w = levels.shape
    f = max(1, min(h, w) // BACKGROUND_SIDE)
    small = levels[: h // f * f, : w // f * f]  # whole blocks: OpenCV's fast path (up to f-1 edge rows left out)
    if f > 1:
        small = cv2.resize(small, (w // f, h // f), interpolation=cv2.INTER_AREA)
    slope = _paper_trend(small)  # per image side, so the same at either size
    curve = _paper_curve(small)
    if _lit_by_ink(small, slope, curve):
        slope, curve = (0.0, 0.0), None
    trend = _plane(slope, *small.shape) if curve is None else _curved(curve, *small.shape)
    level = cv2.subtract(small, trend, dtype=cv2.CV_8U)  # rounded (half to even) and clipped
    # The polarity at full size: reduced, thin strokes and dense marks blur into a grey.
    full = _plane(slope, h, w) if curve is None else _curved(curve, h, w)
    dark_ink, _ = _polarity(level if f == 1 else cv2.subtract(levels, full, dtype=cv2.CV_8U))
    k = max(3, int(0.2 * min(level.shape)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))
    op = cv2.MORPH_CLOSE if dark_ink else cv2.MORPH_OPEN
    background = cv2.blur(cv2.morphologyEx(level, op, kernel), (k, k)).astype(np.float32)
    background += trend
    if f > 1:
        background = cv2.resize(background, (w, h), interpolation=cv2.INTER_LINEAR)
    return background, dark_ink


def _off_page(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """Where a photo shows what lies around the page (a desk, a table's edge), the page's level (a
    plane fitted to the page in the light: its lighting), and the gain that lights the paper in a cast
    shadow again (0 outside shadows; None: no shadow), all full size; or None. What lies around the
    page: the regions much darker than it, without marks, that run along a good part of an image
    edge, found on the image reduced and closed so that no dark stroke is left. A shadow: such a
    region with marks in it (the digit), evenly shaded (not a lighting gradient, which the ink map
    levels itself).

    Left in, such a region was ink to every later step: the background's window (a fifth of the
    image) took a strip of desk for a stroke, and a desk in the corners made the page's polarity that
    of chalk on a board; a digit on a page that did not fill the photo read "not a digit" or nothing.
    A shadow's sharp edge was ink the same way (docs/experiments.md, "A desk around the page").
    """
    import cv2

    h, w = gray.shape
    if min(h, w) < 2 * BACKGROUND_SIDE // 3:
        return None
    levels = _levels_u8(gray)
    f = max(1, min(h, w) // BACKGROUND_SIDE)
    small = cv2.resize(levels, (w // f, h // f), interpolation=cv2.INTER_AREA) if f > 1 else levels
    # A closing takes the strokes away (a median as wide cost 0.4 ms); mirrored at the edges, a strip of
    # desk along an edge counts twice as wide, and so stays if it is over half the window.
    k = max(3, int(PAGE_SMOOTH * min(small.shape)) | 1)
    padded = cv2.copyMakeBorder(small, k, k, k, k, cv2.BORDER_REFLECT)
    closed = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    smooth = np.ascontiguousarray(closed[k:-k, k:-k])
    otsu, _ = cv2.threshold(smooth, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    dark = (smooth <= otsu).view(np.uint8)
    share = cv2.countNonZero(dark)
    if share == 0 or share == dark.size:
        return None
    paper, around = cv2.mean(smooth, 1 - dark)[0], cv2.mean(smooth, dark)[0]
    if paper - around < PAGE_EDGE_CONTRAST * paper:
        return None  # a gentle shade or lighting gradient, which the ink map levels
    # A page is wide: most of its light side outlasts an opening twice the closing's width. Light
    # strokes on a dark ground (a white digit drawn large on black) do not: the ground was blanked as a
    # desk, lit as the page, and the digit read as dark ink on it.
    kk = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * k + 1, 2 * k + 1))
    wide = cv2.morphologyEx(smooth, cv2.MORPH_OPEN, kk, borderType=cv2.BORDER_REFLECT) > otsu
    if cv2.countNonZero(wide.view(np.uint8)) < PAGE_WIDE * (dark.size - share):
        return None
    # ...and so it is in the image as it is, or else its light side is convex (a small page filled by
    # its digit): light strokes flush with the frame's edges (a white digit drawn large on black,
    # touching three edges) closed into a band along them that passed.
    as_is = cv2.morphologyEx(small, cv2.MORPH_OPEN, kk, borderType=cv2.BORDER_REFLECT) > otsu
    if cv2.countNonZero(as_is.view(np.uint8)) < PAGE_WIDE_AS_IS * (dark.size - share) and not _convex(1 - dark):
        return None
    gentle = paper - around < PAGE_CONTRAST * paper  # ...unless a sharp edge parts it from the page
    n, labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=4)
    sh, sw = small.shape
    # The image's grain, not its shading: how far each pixel lies from its 5x5 mean (see marks below).
    fine = np.abs(small.astype(np.float32) - cv2.blur(small, (5, 5)).astype(np.float32))
    off = np.zeros(n, bool)
    shaded = []
    lit = []  # regions found round the page that would be lit as shadows, were they not so large
    reach = _edge_distance(sh, sw)  # each pixel's distance from the image's nearest edge
    # The level around each pixel, strokes and all: made once, where a region needs it (0.4 ms).
    local = functools.cache(lambda: cv2.medianBlur(small, 3 * k).astype(np.float32))
    for i in range(1, n):
        if stats[i, cv2.CC_STAT_AREA] < PAGE_AROUND_AREA * small.size:
            continue
        c = labels == i
        top, bottom, left, right = c[0].mean(), c[-1].mean(), c[:, 0].mean(), c[:, -1].mean()
        if max(top, bottom, left, right) < PAGE_AROUND_EDGE:
            continue
        # From one edge to the opposite one, along neither edge between them: no desk around the page
        # (which lies along the edge that joins them) but a bold stroke closed into a bar, in a digit
        # cropped to its ink one way (top to bottom, a cell as high as the line): it was blanked.
        through = (top > 0 and bottom > 0 and max(left, right) < PAGE_AROUND_EDGE) or (
            left > 0 and right > 0 and max(top, bottom) < PAGE_AROUND_EDGE
        )
        off[i], typical = _around_page(c, through, small, smooth, fine, reach, local, paper, gentle)
        if typical is not None:
            (lit if off[i] else shaded).append((i, typical))
    if not off.any() and not shaded:
        return None
    mask = off[labels].view(np.uint8)
    if mask.mean() > 1 - PAGE_AT_LEAST:
        # Too much of the frame to lie round a page: a shadow over most of it, the digit in the light
        # beyond its edge. Such regions are lit again as shadows (they hold no marks to spoil);
        # left, the shadow's edge was a stroke beside the digit.
        lit = [(i, typical) for i, typical in lit if typical >= SHADE_LIGHT * paper]  # not a dark canvas
        if not lit:
            return None
        shaded += lit
        off[:] = False
        mask[:] = 0
    if off.any():
        mask = mask | _desk_strips(small <= otsu, mask, reach >= k)
    if mask.mean() > 1 - PAGE_AT_LEAST:
        return None
    mask = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=5)  # and the page's blurred edge
    shade = None
    if shaded:
        shade = np.zeros((sh, sw), np.float32)
        for i, typical in shaded:
            region = cv2.dilate((labels == i).view(np.uint8), np.ones((3, 3), np.uint8), iterations=2).view(bool)
            shade[region] = paper / max(typical, 1.0)
        shade = cv2.resize(shade, (w, h), interpolation=cv2.INTER_NEAREST)
    level = _page_level(smooth, (mask == 0) & (dark == 0), h, w)
    return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST).view(bool), level, shade


def _around_page(
    c: np.ndarray,
    through: bool,
    small: np.ndarray,
    smooth: np.ndarray,
    fine: np.ndarray,
    reach: np.ndarray,
    local: Callable[[], np.ndarray],
    paper: float,
    gentle: bool,
) -> tuple[bool, float | None]:
    """One dark region ``c`` (bool, of `_off_page`'s reduced image ``small``, closed: ``smooth``)
    along the frame's edges: whether it lies round the page (a desk: no marks in it, parted from the
    page by a sharp drop, as deep as it reaches in, not ``through`` from one edge to the opposite),
    and its typical level if it would be lit as a shadow (evenly shaded or sharply parted, deep or
    round the page), else None. ``fine``: the image's grain; ``reach``: each pixel's distance from
    the frame's edges; ``local``: gives the level around each pixel (made once, when first asked);
    ``gentle``: the region is not much darker than the ``paper``."""
    import cv2

    sharp = _edge_drop(smooth, c) >= SHADE_EDGE * paper
    if gentle and not sharp:
        return False, None
    # Marks within the region (2x2 patches or more, well darker than its typical level) make it paper
    # in a shadow, or a page of its own, not a desk: it stays as it is.
    inside = cv2.erode(c.view(np.uint8), np.ones((5, 5), np.uint8)).view(bool)  # not its blurred border
    if not inside.any():
        return False, None
    typical = float(np.median(small[inside]))
    # ...and darker than the region's own grain reaches: a dark desk's sensor noise is a large share
    # of its level, and patches of it were marks, so a desk was lit as a shadow and its edge kept.
    # ...and darker than the level around them too (the median of three closing windows, which
    # follows the region's lighting): a desk under its own lighting gradient had "marks" in its
    # darker half, so it was lit as a shadow and the page's edge kept as strokes.
    grain = SHADE_GRAIN * float(np.median(fine[inside]))
    below = min((1 - 2 * MIN_CONTRAST) * typical, typical - grain)
    dark_here = (small < below) & (small < (1 - 2 * MIN_CONTRAST) * local())
    marks = cv2.erode(dark_here.view(np.uint8), np.ones((2, 2), np.uint8))
    # Far from the edges for its depth: no desk, which lies outside a page that is a convex
    # quadrilateral, and so is as deep as it reaches into the frame, but a digit's bold strokes,
    # closed into one region where they touch two edges (a digit cut off centre, flush with
    # three edges of its crop).
    depth = float(cv2.distanceTransform(c.view(np.uint8), cv2.DIST_L2, 3).max())
    thin = int(reach[c].max()) > PAGE_REACH * depth
    # A page's edge is a sharp drop (a desk's 0.3 of the page's level or more); a vignette's dark
    # corners fall off gently and are left to the ink map, which levels them.
    off = not through and not thin and sharp and not marks.view(bool)[inside].any()
    lo, hi = np.percentile(smooth[inside], (10, 90))
    # Evenly shaded, or cut off from the page by a sharp drop: a cast shadow, not a gradient; and
    # deep, or around the page. A shallow one within the border is the digit itself, its strokes
    # closed into one dark blob (a bold digit cropped tight to its ink, whose strokes are wider
    # than the closing), and was lit away.
    even = hi - lo < SHADE_FLAT * typical or sharp
    shadow_like = even and (_border_share(c) > SHADE_AROUND or depth >= SHADE_DEPTH * min(c.shape))
    return off, typical if shadow_like else None


def _desk_strips(dark: np.ndarray, found: np.ndarray, deep: np.ndarray) -> np.ndarray:
    """The strips of desk that `_off_page`'s closing filled (uint8 1 on them): narrower than its window
    between a page's corner and the frame's edge (mirrored there, the page meets itself), they are the
    pieces of ``dark`` (the reduced image as it is, at most Otsu's level) beside what was ``found``
    (uint8) and not reaching ``deep`` (that far in from the frame's edges: a stroke, not a strip).
    Left, they were slivers beside the digit."""
    import cv2

    m, pieces = cv2.connectedComponents((dark & (found == 0)).view(np.uint8), connectivity=8)
    reaching = np.zeros(m, bool)
    reaching[pieces[deep]] = True
    beside = np.zeros(m, bool)
    beside[pieces[cv2.dilate(found, np.ones((3, 3), np.uint8)).view(bool)]] = True
    strips = beside & ~reaching
    strips[0] = False
    return strips[pieces].view(np.uint8)


def _page_level(smooth: np.ndarray, page: np.ndarray, h: int, w: int) -> np.ndarray:
    """The page's lighting, h x w: a plane fitted to the levels of ``smooth`` (the reduced, closed
    image) where ``page`` (the page in the light) holds, every other pixel each way."""
    sh, sw = smooth.shape
    ys, xs = np.nonzero(page[::2, ::2])
    a = np.stack([np.ones(len(ys)), (2 * xs + 0.5) / sw - 0.5, (2 * ys + 0.5) / sh - 0.5], 1)
    coef = np.linalg.lstsq(a, smooth[::2, ::2][ys, xs].astype(np.float64), rcond=None)[0]
    return np.clip(np.float32(coef[0]) + _plane((coef[1], coef[2]), h, w), 0, 255)


def _edge_distance(h: int, w: int) -> np.ndarray:
    """Each pixel's distance (in pixels) from the nearest edge of an h x w image."""
    yy, xx = np.ogrid[:h, :w]
    return np.minimum(np.minimum(yy, h - 1 - yy), np.minimum(xx, w - 1 - xx))


def _convex(mask: np.ndarray) -> bool:
    """Whether the largest region of ``mask`` (uint8, 0 or 1) fills PAGE_CONVEX of its convex hull or
    more, as a page does, seen whole or in part, turned or not."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    if n < 2:
        return False
    i = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    hull = cv2.convexHull(cv2.findNonZero((labels == i).astype(np.uint8)))
    return int(stats[i, cv2.CC_STAT_AREA]) >= PAGE_CONVEX * max(cv2.contourArea(hull), 1.0)


def _levels_u8(gray: np.ndarray) -> np.ndarray:
    """``gray`` as uint8 levels (rounded and clipped where it is float)."""
    return gray if gray.dtype == np.uint8 else np.clip(np.rint(gray), 0, 255).astype(np.uint8)


def _border_share(mask: np.ndarray) -> float:
    """The share of the image's border pixels (its outermost rows and columns) that ``mask`` holds."""
    h, w = mask.shape
    return (np.count_nonzero(mask[[0, -1]]) + np.count_nonzero(mask[1:-1, [0, -1]])) / (2 * (h + w) - 4)


def _cropped_tight(gray: np.ndarray) -> bool:
    """Whether ``gray`` (the working image) is one digit cropped tight to its ink (see TIGHT_SIDE)."""
    import cv2

    levels = _levels_u8(gray)
    otsu, _ = cv2.threshold(np.ascontiguousarray(levels), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    dark = levels <= otsu
    if np.count_nonzero(dark) > dark.size // 2:
        return False  # (chalk on a board, or a page on a darker desk: left to the general path)
    box = _bbox(dark)
    if box is None:
        return False
    h, w = dark.shape
    y0, y1, x0, x1 = box
    e = max(2, round(TIGHT_EDGE * min(h, w)))
    if y0 > e or x0 > e or h - y1 > e or w - x1 > e:
        return False
    if _border_share(dark) >= TIGHT_BORDER:
        return False
    for axis in (0, 1):  # two lines across the whole image one way: ruled or squared paper
        across = dark.mean(axis=axis) >= 0.9
        if np.count_nonzero(across[1:] & ~across[:-1]) + int(across[0]) >= 2:
            return False
    # ...or squared or lined paper turned a few degrees in a photo, where no row is a line: two
    # straight lines apart each way across GRID_SPAN of the image, or TIGHT_LINED one way, found as
    # `forms` finds a page's lines. (Two one way: 20 of 300 tight scans of MNIST digits, whose bold
    # strokes hold straight chords; three changed no field of 1,500 tight scans of MNIST digits nor
    # of 1,000 of cvl-valid digits.)
    across, upright = straight_lines(dark)
    return not (min(across, upright) >= 2 or max(across, upright) >= TIGHT_LINED)


def _one_faint_mark(mask: np.ndarray, strongest: float) -> bool:
    """Whether ink fainter than MIN_CONTRAST (``mask``: its pixels over the threshold) is one mark, as
    a digit in faint pencil is, rather than the scattered peaks of paper grain, sensor noise or JPEG
    blocks: one 8-connected piece holds FAINT_WHOLE of its pixels or more."""
    import cv2

    if strongest < FAINT_INK:
        return False
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    return n > 1 and int(areas.max()) >= FAINT_WHOLE * int(areas.sum())


def _edge_drop(smooth: np.ndarray, region: np.ndarray) -> float:
    """How much darker ``region`` (bool) of ``smooth`` is than what lies just outside it: the median
    level within SHADE_RING px outside its edge less the median within SHADE_RING px inside (the
    image's own edges are no edge of it). A shadow's edge drops within a few pixels; a gradient's
    levels differ there by its slope times the ring's width."""
    import cv2

    kernel = np.ones((2 * SHADE_RING + 1,) * 2, np.uint8)
    u = region.view(np.uint8)
    outside = cv2.dilate(u, kernel).view(bool) & ~region
    inside = region & ~cv2.erode(u, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=1).view(bool)
    if not outside.any() or not inside.any():
        return 0.0
    return float(np.median(smooth[outside])) - float(np.median(smooth[inside]))


def _ink_map(
    gray: np.ndarray, flat: bool = False, tight: bool = False, dark: bool | None = None
) -> tuple[np.ndarray, bool, float]:
    """Ink strength in [0, 1], whatever the polarity, lighting gradient or paper colour; the polarity;
    and the 99.9th percentile of the ink (the strongest ink, ignoring a few hot pixels). ``flat``:
    the background is one level (tiny images, composited canvases); ``tight``: a digit cropped tight
    to its ink (see TIGHT_SIDE); ``dark``: the polarity, where it is known (see `_polarity`).

    8-bit gray stays uint8 up to the ink itself: OpenCV's blur and morphology are several times
    faster on it, and the paper levels come from a histogram.
    """
    import cv2

    h, w = gray.shape
    g = cv2.GaussianBlur(gray, (3, 3), 0) if min(h, w) >= 16 else gray
    levels = g if g.dtype == np.uint8 else np.rint(g).astype(np.uint8)  # to within half a level
    if flat or min(h, w) < 24:
        # Tiny images (an MNIST-sized array), and a composited transparent background (a canvas
        # drawing): the background is the typical level. The morphology would also take a brush
        # stroke wider than its kernel for background and hollow it out (a fat "1" read as a "0").
        dark_ink, median = _polarity(levels, dark)
        background = np.full(g.shape, median, np.float32)
    else:
        background, dark_ink = _background(levels)
    g = g.astype(np.float32, copy=False)
    if dark_ink:
        ink = (background - g) / np.maximum(background, MIN_HEADROOM)  # relative darkening: robust to shade
    else:
        ink = (g - background) / np.maximum(255.0 - background, MIN_HEADROOM)
    # The closing (opening) rides on the peaks of the sensor noise, so bare paper reads as faint ink;
    # most pixels are paper, so their typical level is that bias: take it off.
    sample = ink[::2, ::2] if ink.size >= 4 * 4096 else ink  # every 4th pixel: the same levels, 3x faster
    bias, top = _ink_percentiles(sample, (50, 99.9))
    bias = min(bias, 0.25 * top)  # where ink is the majority (a bold digit cropped tight), not its level
    if tight:
        # A digit cropped tight has no closing to bias its paper; but where a quarter of its pixels or
        # more are ink, the median is that of the ink and its blurred edges, and took faint strokes
        # away (a 6's stem): the paper is what is weaker than a quarter of the strongest ink. (Not in
        # other images: there the median of grey ruled or squared paper's lines and paper is what
        # keeps the lines faint.)
        paper = sample[sample <= 0.25 * top]
        if paper.size < 0.75 * sample.size:
            bias = _ink_percentiles(paper, (50,))[0] if paper.size else bias
    ink -= bias
    np.clip(ink, 0.0, 1.0, out=ink)
    strongest = min(max(top - bias, 0.0), 1.0)
    # A small digit in a large frame (a page photographed whole): under 0.1% of the pixels are ink, the
    # 99.9th percentile is the paper's, and the image read as blank. The strongest 2x2 patch (its
    # weakest pixel, so that a lone hot pixel does not count) says how strong the ink is. On rendered
    # photos, canvases and bitmaps it is within 7% of the percentile, so they are read as before; on
    # digits a twentieth of the frame's side, 6 to 95 times it (docs/experiments.md, "Small digits in
    # a large frame").
    patch = float(cv2.erode(ink, SMALL_INK_PATCH).max()) if ink.size >= 4 else strongest
    if patch > SMALL_INK_RATIO * strongest:
        strongest = patch
    return ink, bool(dark_ink), strongest


def ink_image(image: Any, name: str | None = None, line: bool = False, rules: bool = True) -> InkImage:
    """Decode ``image`` and locate its ink: the shared first half of `to_mnist` and `segment`.
    ``line``: the image holds a line of digits (see `_resize_to_work`). ``rules``: look for printed
    rules under a single digit (see `forms.form_rules`; always looked for in a line) and for pieces of
    its neighbours at the crop's edges (`_without_neighbours`)."""
    return _ink_image(*_gray(image, name), line=line, rules=rules)


def line_ink_image(image: Any, name: str | None = None) -> tuple[InkImage, tuple[float, float]]:
    """`ink_image(image, name, line=True)`, but lines of digits small in a large image (their ink under
    SMALL_DIGIT working pixels high, in an image that was reduced) are read again from the decoded
    image around them, as `to_mnist` reads a small digit; and where the image read starts in the
    image as given, (x, y) in its pixels: the origin of the boxes of what is read in it.

    Reduced with the whole page to WORK_SIDE, a number written small on it kept digits about 16 px
    high: 46 of 60 numbers of `cvl-valid` digits half their size on a 1200 x 900 page were read
    exactly, 52 at the same size alone (docs/experiments.md, "A small number on a large page")."""
    gray, composited, decoded = _gray(image, name)
    ii = _ink_image(gray, composited, decoded, line=True, rules=True)
    reduced = ii.scale / decoded  # working pixels per decoded pixel
    if not ii.components or reduced >= 1:
        return ii, (0.0, 0.0)
    held = functools.reduce(merge_components, ii.components)
    if held.h >= SMALL_DIGIT:
        return ii, (0.0, 0.0)
    margin = SMALL_DIGIT_MARGIN * held.h / reduced
    h, w = gray.shape
    y0, y1 = max(0, int(held.y / reduced - margin)), min(h, int((held.y + held.h) / reduced + margin) + 1)
    x0, x1 = max(0, int(held.x / reduced - margin)), min(w, int((held.x + held.w) / reduced + margin) + 1)
    again = _ink_image(np.ascontiguousarray(gray[y0:y1, x0:x1]), composited, decoded, line=True, rules=True)
    if not again.components:
        return ii, (0.0, 0.0)
    return again, (x0 / decoded, y0 / decoded)


def _ink_image(gray: np.ndarray, composited: bool, decoded: float, line: bool, rules: bool) -> InkImage:
    """`ink_image` of an image already decoded to gray (see `_gray`)."""
    import cv2

    given = gray.shape
    gray, scale = _resize_to_work(gray, line)
    scale *= decoded  # working-image pixels per pixel of the image as given (read()'s boxes use it)
    cropped = not line and _cropped_tight(gray)  # (its dark side is the ink)
    tight = cropped or min(given) < TIGHT_SIDE
    flat = composited or scale > decoded or tight
    page = None if flat else _off_page(gray)
    off = None
    if page is not None:  # what the photo shows around the page becomes blank paper, lit as the page is
        around, level, shade = page
        off = around if around.any() else None
        g = np.where(around, level, gray.astype(np.float32))
        if shade is not None:
            g = np.where(shade > 0, np.minimum(g * shade, level), g)
        gray = np.clip(g, 0, 255).astype(gray.dtype) if gray.dtype == np.uint8 else g
    # A tiny image has no lighting to take off, and its strokes may be wider than the background's window.
    ink, dark_ink, strongest = _ink_map(gray, flat=flat, tight=tight, dark=True if cropped else None)
    threshold = max(min(MIN_CONTRAST, FAINT_SHARE * strongest), RELATIVE_INK * strongest)
    mask = ink >= threshold
    if not mask.any() or (strongest < MIN_CONTRAST and not _one_faint_mark(mask, strongest)):
        empty = np.zeros(ink.shape, np.int32)
        return InkImage(ink, np.zeros_like(mask), empty, (), scale, dark_ink)
    # Components within the box that holds all the ink (on a photo often a tenth of the image, and
    # the labelling costs per pixel): the same labels, in the same raster order, and the same stats
    # once shifted back into the whole image.
    y0, y1, x0, x1 = _bbox(mask)  # type: ignore[misc]  # the mask has ink
    y0, x0 = y0 - y0 % 2, x0 - x0 % 2  # OpenCV labels 2x2 blocks: keep them aligned with the image's
    crop = mask[y0:y1, x0:x1]
    n, sub, stats, _ = cv2.connectedComponentsWithStats(crop.astype(np.uint8), connectivity=8)
    h, w = mask.shape
    # Whether the ink runs from edge to edge (a crop of lined or squared paper): not looked at in a
    # digit cropped tight, which touches every edge: there a bold stroke from top to bottom (a 4's
    # stem) was taken for a margin's line, two strokes for squared paper.
    edges = (x0 == 0 and x1 == w, y0 == 0 and y1 == h) if not tight else (False, False)
    # Whether the ink comes within a tenth of the image's side of two opposite edges, across and from
    # top to bottom (a page's lines in a photo of a notebook run on to about them): then the lines of
    # ruled paper are looked for, and a margin's rule from top to bottom through one digit; elsewhere
    # (False) only lines that run far past the digit (`forms.LINES_PAST`); never in a digit cropped
    # tight (None).
    near = (x0 <= PAGE_NEAR * w and x1 >= (1 - PAGE_NEAR) * w, y0 <= PAGE_NEAR * h and y1 >= (1 - PAGE_NEAR) * h)
    page = any(near) if not tight and not line else None
    if page and near[1]:
        edges = (edges[0], True)
    printed = form_rules(
        crop,
        sub,
        stats,
        line,
        rules,
        edges=edges,
        ink=ink[y0:y1, x0:x1],
        page=page,
        along_edges=off is None,
        composited=composited,
    )
    stubs = None  # the marks that touched the printed lines taken off (one digit's image)
    if printed is not None:  # printed lines of a form are not ink: take them off and label again
        crop &= ~printed
        n, sub, stats, _ = cv2.connectedComponentsWithStats(crop.astype(np.uint8), connectivity=8)
        if n == 1:
            return InkImage(ink, np.zeros_like(mask), np.zeros(ink.shape, np.int32), (), scale, dark_ink)
        if not line:
            beside = cv2.dilate(printed.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool)
            stubs = np.zeros(n, bool)
            stubs[np.unique(sub[beside])] = True
    stats[:, cv2.CC_STAT_LEFT] += x0
    stats[:, cv2.CC_STAT_TOP] += y0
    crop_ink = ink[y0:y1, x0:x1]  # the labelled crop's ink
    areas = stats[1:, cv2.CC_STAT_AREA]
    biggest = int(areas.max())
    big = int(np.argmax(areas)) + 1
    big_x0, big_x1 = int(stats[big, 0]), int(stats[big, 0] + stats[big, 2])
    near_off = None if off is None else cv2.dilate(off.view(np.uint8), np.ones((5, 5), np.uint8)).view(bool)
    keep = []
    for i in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[i])
        if area < max(3, SPECK * biggest):
            continue  # specks and noise
        spans_width = bw >= 0.9 * w and bh <= 0.1 * h
        spans_height = bh >= 0.98 * h and bw <= 0.05 * w and (x == 0 or x + bw == w)
        # A line from top to bottom beside other marks, not a line of digits: a fold, two pages' edge.
        spans_height |= not line and n > 2 and bh >= 0.98 * h and bw <= 0.03 * w
        if spans_width or spans_height:
            continue  # a ruled line or a page edge, not a digit
        if stubs is not None and stubs[i] and area < STUB_AREA * biggest and (x >= big_x1 or x + bw <= big_x0):
            continue  # what the printed lines taken off leave beside the digit
        box = (slice(y - y0, y - y0 + bh), slice(x - x0, x - x0 + bw))  # in the labelled crop
        own = sub[box] == i
        edge = x == 0 or y == 0 or x + bw == w or y + bh == h
        if off is not None and edge and (bw >= 0.15 * w or bh >= 0.15 * h):
            # In a photo that shows what lies around the page: a mark within a tenth of the image's side
            # of its edges, along a sixth of one or more, is a sliver of it too narrow for `_off_page`.
            r0, r1 = max(0, round(0.1 * h) - y), min(bh, round(0.9 * h) - y)
            c0, c1 = max(0, round(0.1 * w) - x), min(bw, round(0.9 * w) - x)
            if r0 >= r1 or c0 >= c1 or not own[r0:r1, c0:c1].any():
                continue
        if near_off is not None and area < PAGE_SCRAP * biggest and near_off[y : y + bh, x : x + bw][own].any():
            continue  # a scrap of what lies around the page, left at its edge
        mass = float(crop_ink[box][own].sum(dtype=np.float64))  # its ink, within its box
        keep.append(Component(x, y, bw, bh, mass, (i,)))
    keep.sort(key=lambda c: c.x)
    # (Not in a small bitmap the digit fills: no crop cut a neighbour there, and the piece at its edge
    # is the digit's own, a stretched 9's loop broken off its stem.)
    if rules and not line and len(keep) > 1 and not _fills(given, keep, h, w):
        keep = _without_neighbours(keep, w)
    if len(keep) < n - 1:  # some were dropped: unlabel them
        relabel = np.zeros(n, np.int32)  # a lookup table: kept labels map to themselves, others to 0
        for c in keep:
            relabel[list(c.labels)] = c.labels
        sub = np.take(relabel, sub)  # a third of the time of np.where(kept[sub], sub, 0)
    labels = np.zeros(mask.shape, np.int32)
    labels[y0:y1, x0:x1] = sub
    return InkImage(ink, labels > 0, labels, tuple(keep), scale, dark_ink)


def _without_neighbours(comps: list[Component], width: int) -> list[Component]:
    """One digit's components (left to right) without a piece of a neighbour that the crop's left or
    right edge cut: the one mark at that edge, apart from the rest by a column of paper, the rest not
    reaching that edge, narrower than NEIGHBOUR_WIDTH of the rest's height and lighter than
    NEIGHBOUR_MASS of its ink (a digit cropped from a number, a date, a row of boxes)."""
    for at_left in (True, False):
        if len(comps) < 2:
            break
        piece = comps[0] if at_left else comps[-1]
        rest = comps[1:] if at_left else comps[:-1]
        x0, x1 = min(c.x for c in rest), max(c.x + c.w for c in rest)
        y0, y1 = min(c.y for c in rest), max(c.y + c.h for c in rest)
        if at_left:
            cut, apart, free = piece.x == 0, piece.x + piece.w < x0, x0 > 0
        else:
            cut, apart, free = piece.x + piece.w == width, piece.x > x1, x1 < width
        if (
            cut
            and apart
            and free
            and piece.w <= NEIGHBOUR_WIDTH * (y1 - y0)
            and piece.mass <= NEIGHBOUR_MASS * sum(c.mass for c in rest)
        ):
            comps = rest
    return comps


# --- 4. MNIST normalization ------------------------------------------------------------------------


def stroke_width(mask: np.ndarray) -> float:
    """Typical stroke width in pixels: twice the mean distance to the background along the ridge."""
    import cv2

    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    if not mask.any():
        return 0.0
    ridge = dist >= cv2.dilate(dist, np.ones((3, 3), np.uint8)) - 1e-6  # local maxima of the distance
    ridge &= mask
    # The median ignores junctions (wide) and stroke ends (narrow).
    return 2.0 * _percentile(dist[ridge], 50) if ridge.any() else 1.0


_COORDS = np.arange(FIELD, dtype=np.float64)  # pixel coordinates along a side of the field


def _centre_of_mass(field: np.ndarray, total: float) -> tuple[float, float]:
    """Row and column of the centre of mass of a (28, 28) ``field`` whose pixels sum to ``total`` (> 0)."""
    cy = float(field.sum(axis=1, dtype=np.float64) @ _COORDS) / total
    cx = float(field.sum(axis=0, dtype=np.float64) @ _COORDS) / total
    return cy, cx


def digit_to_mnist(ink: np.ndarray, mask: np.ndarray, aspect: float | None = None) -> np.ndarray:
    """One digit's ink (float [0, 1]) and mask, cropped to it -> uint8 (28, 28) as MNIST made its digits.
    ``aspect``: the ink's box is made at most this wide for its height first (a digit stretched to fill
    its frame: see STRETCHED_ASPECT)."""
    import cv2

    box = _bbox(mask)
    if box is None:
        return np.zeros((FIELD, FIELD), np.uint8)
    y0, y1, x0, x1 = box
    side = max(y1 - y0, x1 - x0)
    target = MNIST_STROKE * side  # MNIST's stroke width at this digit's size
    pad = 2 + int(target)  # room for strokes to grow
    border = (pad, pad, pad, pad, cv2.BORDER_CONSTANT)  # cv2.copyMakeBorder: np.pad's result, 10x faster
    crop_mask8 = cv2.copyMakeBorder((mask[y0:y1, x0:x1] != 0).view(np.uint8), *border, value=0)  # 0 or 1
    crop_mask = crop_mask8.view(bool)
    # Keep the anti-aliased edge of each stroke: ink near the mask, nothing elsewhere.
    near = cv2.dilate(crop_mask8, np.ones((3, 3), np.uint8)).view(bool)
    crop = cv2.copyMakeBorder(np.ascontiguousarray(ink[y0:y1, x0:x1]), *border, value=0) * near
    strength = np.clip(crop / max(_percentile(crop[crop_mask], 90), 1e-3), 0, 1)
    # Strokes thinner or thicker than MNIST's (a fine pen on a big photo, a fat canvas brush) are
    # grown or thinned into MNIST's range. Thinning every stroke over 1.3x the typical width, as this
    # did before, thinned a fifth of MNIST's own digits and broke some: on 1,200 photos and 800
    # canvases of validation digits, the model then shipped misread or rejected 10 and 15 then, 5
    # and 13 now.
    width = stroke_width(crop_mask)
    if width < THICKEN_BELOW * target:
        r = max(1, round((target - width) / 2))
        strength = cv2.dilate(strength, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    elif width > THIN_ABOVE * target:
        r = max(1, round(min(width - THIN_TO * target, THIN_AT_MOST * target) / 2))
        thinned = cv2.erode(strength, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
        if thinned.max() > 0.5:  # never erase the digit
            strength = thinned
    y0, y1, x0, x1 = _bbox(strength > 0.05) or (0, strength.shape[0], 0, strength.shape[1])
    strength = strength[y0:y1, x0:x1]
    h, w = strength.shape
    if aspect is not None and round(aspect * h) < w:
        w = max(1, round(aspect * h))
        strength = cv2.resize(strength, (w, h), interpolation=cv2.INTER_AREA)
    # Fit into the 20x20 box, preserving aspect ratio. A digit smaller than the box (small in a large
    # photo) is enlarged by bicubic interpolation: bilinear blurred its strokes (2,000 cvl-valid digits
    # 12-23 px high in photos of 250-400 px, 83.0 -> 88.5% read right; docs/experiments.md, "Small
    # digits enlarged into their box").
    scale = BOX / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if scale < 1:
        small = cv2.resize(strength, (nw, nh), interpolation=cv2.INTER_AREA)
    else:  # bicubic overshoots a little past the strokes' edges: kept within [0, 1] as the ink is
        small = np.clip(cv2.resize(strength, (nw, nh), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)
    field = np.zeros((FIELD, FIELD), np.float32)
    top, left = (FIELD - nh) // 2, (FIELD - nw) // 2
    field[top : top + nh, left : left + nw] = small
    total = float(field.sum())
    if total > 0:  # shift so the centre of mass sits at the centre of the field, as MNIST did
        cy, cx = _centre_of_mass(field, total)
        m = np.float32([[1, 0, (FIELD - 1) / 2 - cx], [0, 1, (FIELD - 1) / 2 - cy]])
        field = cv2.warpAffine(field, m, (FIELD, FIELD), flags=cv2.INTER_LINEAR, borderValue=0)
    peak = _percentile(field[field > 0.05], 95) if (field > 0.05).any() else 1.0
    return np.clip(np.rint(field / max(peak, 1e-3) * 255.0), 0, 255).astype(np.uint8)


def elongation(field: np.ndarray) -> float:
    """How thin a field's ink is: the standard deviation of the ink across its main axis over the one
    along it (0: a line, 1: round). Below ONE_LIKE lie 92% of MNIST's training 1s and 0.13% of its
    other digits."""
    f = field.astype(np.float64)
    total = f.sum()
    if total <= 0:
        return 1.0
    yy, xx = np.mgrid[: f.shape[0], : f.shape[1]]
    cy, cx = (f * yy).sum() / total, (f * xx).sum() / total
    dy, dx = yy - cy, xx - cx
    cov = np.array([[(f * dy * dy).sum(), (f * dx * dy).sum()], [(f * dx * dy).sum(), (f * dx * dx).sum()]]) / total
    small, large = np.linalg.eigvalsh(cov)
    return float(np.sqrt(max(small, 0.0) / large)) if large > 0 else 1.0


def _as_field(gray: np.ndarray) -> np.ndarray | None:
    """A 28x28 image already in MNIST's format -> that field, light ink on black, at full contrast
    where it was lower; else None. MNIST's format (see FIELD_BOX): on a flat background (half the
    pixels or more), the ink's box FIELD_BOX pixels on its longer side, the centre of its mass within
    FIELD_CENTRE, its strokes' core saturated: an MNIST digit saved as an image, or a field `to_mnist`
    made.

    Preprocessed again, such a field came back changed (enlarged, blurred, its strokes grown or
    thinned, shifted by a fraction of a pixel): MNIST's test digits read 99.23% right that way and
    99.60% as they are, `cvl-valid`'s fields 96.2% and 97.2% (docs/experiments.md, "Images already in
    MNIST's format")."""
    if gray.shape != (FIELD, FIELD):
        return None
    a = gray.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    if hi - lo < FIELD_CONTRAST * 255:
        return None
    a = hi - a if np.median(a) > (lo + hi) / 2 else a - lo  # light ink on black, whatever it was
    if hi - lo < 255 - FIELD_INK:  # (MNIST's own digits peak at 254 or 255: left as they are)
        a *= 255.0 / (hi - lo)
    ink = a > FIELD_INK
    if not 0 < np.count_nonzero(ink) <= ink.size // 2:
        return None
    if np.count_nonzero(a >= 250) < FIELD_SATURATED * np.count_nonzero(ink):
        return None  # not MNIST's look: strokes without a saturated core
    if np.count_nonzero(ink & (a < 250)) < FIELD_GREY * np.count_nonzero(ink):
        return None  # ...nor without anti-aliased edges: a bitmap of two levels (see FIELD_GREY)
    y0, y1, x0, x1 = _bbox(ink)  # type: ignore[misc]  # it has ink
    if not FIELD_BOX[0] <= max(y1 - y0, x1 - x0) <= FIELD_BOX[1]:
        return None
    cy, cx = _centre_of_mass(a, float(a.sum(dtype=np.float64)))
    if not (FIELD_CENTRE[0] <= cy <= FIELD_CENTRE[1] and FIELD_CENTRE[0] <= cx <= FIELD_CENTRE[1]):
        return None
    return np.rint(a).astype(np.uint8)


@functools.cache
def preprocessing_digest() -> str:
    """A short sha256 of the code of the preprocessing (this module, `forms`, `masks`): cached fields
    (`data.load_labelled`) are keyed by it besides PREPROCESSING_VERSION, so fields made by other code
    of the same version (a change not yet given a version) are never served."""
    import hashlib
    from pathlib import Path

    digest = hashlib.sha256()
    for name in ("images.py", "forms.py", "masks.py"):
        digest.update(Path(__file__).with_name(name).read_bytes())
    return digest.hexdigest()[:12]


def to_mnist(image: Any, name: str | None = None, rules: bool = True) -> np.ndarray:
    """Any image holding one digit -> uint8 (28, 28), white on black, fitted and centred the MNIST way.

    An image with no ink gives an all-black field (the recognizer reports it as "no digit").
    ``rules``: take off what a digit cut from a page carries besides itself: a printed line it was
    written on (an underline), a piece of a neighbour cut by the crop's edge; the training renders
    (`realdata`) are made without, since they have none, and so that they stay what the shipped
    model was trained on.
    """
    gray, composited, decoded = _gray(image, name)
    field = None if composited else _as_field(gray)
    if field is not None:
        return field
    ii = _ink_image(gray, composited, decoded, line=False, rules=rules)
    reduced = ii.scale / decoded  # working pixels per decoded pixel
    if ii.components and reduced < 1:
        held = functools.reduce(merge_components, ii.components)  # the box holding all the ink
        if max(held.w, held.h) < SMALL_DIGIT:
            # A small digit in a large photo: read again from the decoded image around it, at the
            # resolution the reduction to WORK_SIDE took from it (docs/experiments.md, "Small digits
            # in a large frame").
            side = max(held.w, held.h) / reduced
            cx, cy = (held.x + held.w / 2) / reduced, (held.y + held.h / 2) / reduced
            half = max(side * (0.5 + SMALL_DIGIT_MARGIN), SMALL_DIGIT / 2)
            h, w = gray.shape
            box = (
                max(0, int(cy - half)),
                min(h, int(cy + half) + 1),
                max(0, int(cx - half)),
                min(w, int(cx + half) + 1),
            )
            crop = np.ascontiguousarray(gray[box[0] : box[1], box[2] : box[3]])
            again = _ink_image(crop, composited, 1.0, line=False, rules=rules)
            if again.components:
                ii = again
    return digit_to_mnist(ii.ink, ii.mask, STRETCHED_ASPECT if _stretched(gray.shape, ii) else None)


def _stretched(shape: tuple[int, ...], ii: InkImage) -> bool:
    """Whether an image of ``shape`` (as decoded) whose ink is ``ii`` is a digit stretched to fill its
    frame: square, STRETCHED_SIDE pixels a side at most, its ink within STRETCHED_EDGE of its pixels of
    every edge."""
    return bool(ii.components) and _fills(shape, list(ii.components), *ii.mask.shape)


def _fills(shape: tuple[int, ...], comps: list[Component], h: int, w: int) -> bool:
    """Whether ``comps`` (of a working image h x w) fill an image of ``shape`` (as decoded) as a
    digit stretched to fill its frame does (see `_stretched`)."""
    side = shape[0]
    if shape[0] != shape[1] or side > STRETCHED_SIDE:
        return False
    e = STRETCHED_EDGE * h / side  # in working pixels
    x0, y0 = min(c.x for c in comps), min(c.y for c in comps)
    x1, y1 = max(c.x + c.w for c in comps), max(c.y + c.h for c in comps)
    return max(y0, x0, h - y1, w - x1) <= e


# --- segmentation ----------------------------------------------------------------------------------


def merge_components(a: Component, b: Component, mass: float | None = None) -> Component:
    """One component holding both: their bounding box and labels, their mass summed unless given."""
    x0, y0 = min(a.x, b.x), min(a.y, b.y)
    x1, y1 = max(a.x + a.w, b.x + b.w), max(a.y + a.h, b.y + b.h)
    return Component(x0, y0, x1 - x0, y1 - y0, a.mass + b.mass if mass is None else mass, a.labels + b.labels)


def _marks_height(comps: tuple[Component, ...] | list[Component]) -> float:
    """The median height of the heavier components (a quarter of the heaviest's ink or more): how
    high a line's marks are, not counting specks and flags. ``comps``: at least one."""
    heaviest = max(c.mass for c in comps)
    return float(np.median([c.h for c in comps if c.mass >= 0.25 * heaviest]))


# Lines of digits one above the other (a zip code over an amount) are read apart: the digit-sized
# marks' vertical extents, merged where they overlap or lie closer than LINE_GAP of the marks'
# height, make one band per line. Read as one line, two lines came out interleaved by position.
LINE_GAP = 0.2


def split_lines(ii: InkImage) -> list[InkImage]:
    """The image's lines of digits, top to bottom, each with only its own components (``ii`` itself
    when there is one). A line is a band of rows holding digit-sized marks (at least half the median
    height of the heavier marks) with a gap of at least LINE_GAP of that height to the next band;
    smaller marks go with the nearest band. A slanted line, whose marks overlap their neighbours,
    stays one band."""
    comps = ii.components
    if len(comps) < 2:
        return [ii]
    height = _marks_height(comps)
    bands: list[list[int]] = []  # [top, bottom) of each band, top to bottom
    for c in sorted((c for c in comps if c.h >= 0.5 * height), key=lambda c: c.y):
        if bands and c.y < bands[-1][1] + LINE_GAP * height:
            bands[-1][1] = max(bands[-1][1], c.y + c.h)
        else:
            bands.append([c.y, c.y + c.h])
    if len(bands) < 2:
        return [ii]

    def distance(c: Component, band: list[int]) -> float:
        centre = c.y + c.h / 2
        return max(band[0] - centre, centre - band[1], 0.0)

    members: list[list[Component]] = [[] for _ in bands]
    for c in comps:
        members[min(range(len(bands)), key=lambda k: distance(c, bands[k]))].append(c)
    return [replace(ii, components=tuple(m)) for m in members]


def segment(ii: InkImage) -> list[Component]:
    """Group an image's ink components into digit candidates, left to right.

    Components whose horizontal extents overlap substantially belong to one digit (a 5's flag, a
    7's bar, a broken stroke), and so does a mark under half the line's height that overlaps one at
    all. Specks much smaller than the line's digits, marks much wider than
    tall (dashes, underlines, pieces of ruled lines) and marks a few pixels high are dropped.
    """
    comps = sorted(ii.components, key=lambda c: c.x)
    if not comps:
        return []
    line_height = _marks_height(comps)
    groups: list[Component] = []
    for c in comps:
        if groups:
            g = groups[-1]
            overlap = min(g.x + g.w, c.x + c.w) - max(g.x, c.x)
            gap = max(g.y, c.y) - min(g.y + g.h, c.y + c.h)  # vertical distance between them (< 0: overlap)
            # Slanted neighbours overlap a little; a 5's flag or a 7's bar lies over its digit, and close
            # to it (pieces of ruled lines one above the other are not one digit). A mark under half the
            # line's height that overlaps a digit at all is part of it: a 5's flag often starts just
            # past the body's corner (overlap 13-23% of the flag's width; at 30% it was dropped as a
            # speck, and the 5 read "6" or "3": on 2,500 numbers of validation digits, 2,372 -> 2,386 right).
            near = gap <= 0.5 * line_height
            small = min(g.h, c.h) < 0.5 * line_height
            if near and (overlap > 0.6 * min(g.w, c.w) or (small and overlap > 0)):
                groups[-1] = merge_components(g, c)
                continue
        groups.append(c)
    biggest = max(x.mass for x in groups)
    return [
        g
        for g in groups
        if (g.h >= SPECK_HEIGHT * line_height or g.mass >= 0.15 * biggest)
        # No digit, and no run of up to 5 touching digits, is 4x wider than tall: that is a dash, an
        # underline or a piece of a ruled line. Nor is a mark under MIN_DIGIT_HEIGHT pixels readable.
        and g.h >= 0.25 * g.w
        and g.h >= MIN_DIGIT_HEIGHT
    ]


def group_mask(ii: InkImage, group: Component) -> np.ndarray:
    """Which pixels of the group's box (rows y..y+h, columns x..x+w) are its ink: bool (h, w)."""
    return np.isin(ii.labels[group.y : group.y + group.h, group.x : group.x + group.w], group.labels)


def group_to_mnist(
    ii: InkImage, group: Component, columns: tuple[int, int] | None = None, mask: np.ndarray | None = None
) -> np.ndarray:
    """The MNIST field of one group (optionally only the columns [c0, c1) of the working image).

    ``mask``: the group's `group_mask`, when the caller already has it (reading scores many pieces of
    one group).
    """
    import cv2

    mask = group_mask(ii, group) if mask is None else mask.copy()  # the group's box holds all of its ink
    if columns is not None:
        mask[:, : max(0, columns[0] - group.x)] = False
        mask[:, max(0, columns[1] - group.x) :] = False
    ink = ii.ink[group.y : group.y + group.h, group.x : group.x + group.w]
    f = -(-max(group.h, group.w) // READ_SIDE)
    if f > 1:  # whole blocks, reduced by f
        h, w = group.h // f, group.w // f
        ink = cv2.resize(ink[: h * f, : w * f], (w, h), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask[: h * f, : w * f].view(np.uint8), (w, h), interpolation=cv2.INTER_AREA) > 0
    return digit_to_mnist(ink, mask)

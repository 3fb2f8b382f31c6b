"""Printed lines told from handwriting: the boxes, combs, underlines and ruled lines of forms and
pages, found in an ink mask so that the reading path (`images`) can take them off before it reads.

Imports NumPy, OpenCV and `masks` only. `form_rules` is the entry point: frames in any image; rules
in a line of digits; under a single digit, a line it rests on or that crosses it, a comb's teeth and
an open cell's sides, and the lines of lined or squared paper.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .masks import bbox as _bbox
from .masks import disc as _disc
from .masks import percentile as _percentile

__all__ = ["MIN_DIGIT_HEIGHT", "SPECK", "form_rules", "straight_lines"]

MIN_DIGIT_HEIGHT = 6  # pixels of the working image: `read` ignores shorter marks (specks, ruling fragments)
SPECK = 0.04  # a mark with less than this share of the largest mark's pixels is a speck or noise

# Printed form rules (see `form_rules`): in a line of digits, a straight line at least RULE_LENGTH
# times as long as the marks are high is a rule (an underline, a comb's base, a row of boxes' top
# and bottom): no digit's stroke is as long.
RULE_LENGTH = 1.5
RULE_SPAN = 0.9  # ...and at least this fraction of the line's ink as wide: rules span the field
RULE_SLOPE = 0.36  # ...within 20 degrees of the horizontal
RULE_COS = 0.94  # a rule within 20 degrees of the horizontal runs across at least this much of its length
# A rule's pixels stay where the ink across it runs longer than THICK_LINE times its width
# (`_line_pixels`' radius less one): a stroke lies along it or crosses it. On lined paper with dark
# lines (level 100 on 235 paper, 2 px) through 40 lines of validation digits: 16 -> 39 read right,
# 15 -> 31 as photos; with 3 px lines 0 -> 29 and 0 -> 22 (1.0 and 1.5: within two lines of these over
# the eight darker settings). Validation form fields (boxes, row, comb, underline): 93 / 88 / 90 / 94
# -> 95 / 88 / 96 / 97 of 100.
THICK_LINE = 1.25
# In a line of digits, ink this many times as strong as a printed line's own (its 75th percentile),
# on it, is a stroke (`form_rules`): validation form fields 90.7% exact, 90.3% with 1.15 or 1.5,
# 89.3% without (docs/experiments.md, "Strokes on lighter ruled lines").
PEN_OVER = 1.3
# A margin's rule through one digit that ends short of the frame is taken off only where its ink (75th
# percentile) is at most this share of the rest's: printed rules are lighter than the pen. At 0.8, two
# of cvl-valid's 7,000 digits (1s whose stem is lighter than their flag) lost their stem; at 0.65 none
# changed, and 200 margin photos read 76.5% right (80.5% at 0.8, 64.5% before).
RULE_LIGHTER = 0.65
# ...and is looked for only where the ink in the top and bottom RULE_END_ROWS of the marks' height is
# no stronger than RULE_END_DARK of the pen's 90th percentile (`_ends_light`): such a rule runs past
# the digit at both ends. Of 300 margin photos whose rule was taken off, the ends reached 0.76 at
# most; of 300 photos of MNIST digits 91% have an end over 0.9, and the search cost a quarter of a
# served photo's CPU time (docs/experiments.md, "The margin's rule search, spared").
RULE_END_ROWS = 0.05
RULE_END_DARK = 0.85
# In the image of one digit (`predict`), rules count only where they run past the rest of the ink on
# both sides, by at least STICK_OUT of its height each: a line written on runs on beyond the digit,
# a digit's own long stroke (a 2's flat base, a 5's bar) ends at it on one side. On 200 photographed
# validation digits each over an underline, `predict` right for 9 before, 192 after (on a comb, whose
# teeth often end the line at the digit: 3 -> 86); past the rest by 0.3 of its height on both sides
# together instead: 193, but 5 of 3,000 rendered training digits lost a stroke (1 with this rule).
STICK_OUT = 0.1
# A straight bar joined to a rule (`_rules`) and TALL_BAR times as tall as the median of the marks that
# stand apart from the rules, or taller, is printed too: a margin's rule past the last ruled line found,
# a box's side past a row's rules; read as a 1 before (docs/experiments.md, "A margin's rule beside a
# number").
TALL_BAR = 1.5
# A line that one digit touches or crosses (`_touching_rule`): at least RULE_UNDER times as long as
# the rest of the ink is high, running on past it by RULE_PAST of that height on both sides, its
# middle below the top RULE_BELOW of the digit (not a 5's or 7's bar), its pixels in RULE_WHOLE of
# its columns at least (whole but where strokes cross it) and, in a column, RULE_THIN of the rest's
# height at most (thin: a 9's thick loop and tail are no line), the rest at least half the ink's
# height. Past by 0.1 (STICK_OUT), 0.2 or a share of 0.6 took the base off 1 to 5 of 26,880 clean
# digits (2s with a long flat base: MNIST test, cvl-valid, cvl-train, optdigits); with these none
# (docs/experiments.md, "Lines and boxes around one digit").
RULE_UNDER = 1.0
RULE_PAST = 0.25
RULE_BELOW = 0.3
RULE_WHOLE = 0.75
# A line with upright bars on both sides of a digit that is more than bars (a comb, an open cell:
# `_teeth`) is printed: it need not run on past the digit (a cell's sides end it), and the digit's
# strokes may cross more of it.
RULE_WHOLE_CELL = 0.5
# A comb's tooth measures wider than its base line (the blurred corner where they join goes with it):
# up to TOOTH_WIDTH times the line's width (`_line_pixels`' radius) and 2 pixels. At 1.0, one tooth of
# a comb measured 18.4 px against a limit of 18 and stayed, read with the digit (docs/experiments.md,
# "Combs and small boxes round one digit").
TOOTH_WIDTH = 1.2
RULE_THIN = 0.25
# A line spans the ink's width W at 20 degrees at most, so it is under 1.07 W long, and the rest of the
# ink is at least the ink's height H less the line's width and slant: ink narrower than
# TOUCHING_ASPECT * H holds no such line and is not searched (most 1s, 7s and 9s).
TOUCHING_ASPECT = 0.65
# ...and the line is looked for in the ink reduced to at most this many pixels a side: at full size
# the search cost a photographed digit (100-500 px photos) 1.4 ms more on one core, reduced to 96 px
# 0.55 ms, to 128 px 0.74 ms, for about the same digits read right (docs/experiments.md, "Lines and
# boxes around one digit").
TOUCHING_SIDE = 96
# The lines of lined or squared paper around one digit (`_page_lines`): straight lines each across
# GRID_SPAN of the ink's box; squared paper has two or more each way and GRID_LINES in all. A phone
# photo turned a few degrees ends its lines short of the box's corners: across 0.95 of it, one line
# of three was found (docs/experiments.md, "Ruled paper in a photo"). Four lines (a grid of two each
# way) suffice since a frame is told apart first (`form_rules`: a box's four sides are no squared paper).
GRID_LINES = 4
GRID_SPAN = 0.8
# A page's lines are thin: `_line_pixels`' radius (about their width) at most PAGE_LINE of the shorter
# side of the ink's box. Bold strokes of optdigits' 32x32 bitmaps held straight chords 10-15 px wide
# on a 40-44 px box, and 5 of them lost strokes to them; at 0.1 some of squared paper's lines in a
# photo were too wide (docs/experiments.md, "Ruled paper in a photo").
PAGE_LINE = 0.125
# What is left of the ink once the lines are off, less the scraps of the lines themselves (their
# blurred ends and edges, which touch them): pieces under SCRAP_AREA of the biggest's pixels and
# under SCRAP_SIZE of its longer side. A box's sides and a comb's tall teeth are longer.
SCRAP_AREA = 0.2
SCRAP_SIZE = 0.5
# A piece of ink at the side of the ink's box that a page's line found runs to, touching it, and at
# most LINE_END times the line's width across it, is the line's end that the transform's segments
# stopped short of (`_line_ends`).
LINE_END = 1.0
# Lines of a page that end within the image (a page smaller than the frame, a worksheet's ruled
# block) around a digit whose ink comes near no two opposite edges: looked for only where one
# component is long and thin enough to be one of them (`_line_alone`), and kept where they run past
# the rest of the ink on both sides by LINES_PAST of its size across them (a page's lines run on; a
# digit's own straight strokes end within it). At 0.15 and 0.25 the same fields changed, at 0.5 half
# of the photos of lined paper mended at 0.25 were missed (docs/experiments.md, "Lines that end
# within the photo").
LINES_PAST = 0.25
# A frame (a box around a digit, or around a row of them) is a component whose convex outline is a
# quadrilateral with corners within FRAME_CORNER degrees of square, each side straight ink along at
# least FRAME_COVER of its length (rules are checked the same way); hollow: its ink covers under
# half of its box. On 3,000 training letters the test found no frame; with ink within 2 px of the
# sides instead of straight ink, 24 ("a", "w", "U").
FRAME_COVER = 0.85
FRAME_CORNER = 25.0
FRAME_MIN = 12  # pixels of the working image: smaller components are never frames
# ...and a frame's component, the digit within it included where it touches the frame, covers at most
# this share of its box in the image of one digit (half in a line). Half missed small boxes with a
# bold digit touching them (see docs/experiments.md, "Lines and boxes around one digit").
FRAME_FILL = 0.7
# A frame's lines are thin: `_line_pixels`' radius (about their width) at most FRAME_LINE of its side.
FRAME_LINE = 0.15
# A small box photographed (20-60 px a side in the working image) blurs to lines 0.15-0.25 of its side,
# and stayed round the digit. Lines up to FRAME_LINE_HOLDING of the side make a frame too where a mark
# lies within its box or the rest of its component (a digit touching it, the ink FRAME_GROW pixels
# past the lines) is FRAME_REST of the lines' ink or more: a 0 cropped flush with three edges, its
# sides flattened, left 0.01-0.09 and was taken for a box (3 of 7,000 `cvl-valid` zeros so cropped
# with 0.25 alone); boxes touching their digit left 0.05-0.26, most over 0.1 (docs/experiments.md,
# "Combs and small boxes round one digit").
FRAME_LINE_HOLDING = 0.25
FRAME_REST = 0.1
# In the image of one digit, a frame or a line the digit touches takes the ink within FRAME_GROW pixels
# of it too: the runs along a tilted line leave the steps of its edges, which then read as strokes
# (a stroke touching the line loses as much at its end). Lines of digits are read as before.
FRAME_GROW = 2
ROW_OF_BOXES = 1.6  # a frame this many times as wide as high (or more) holds several boxes
# Around one digit, a straight line within EDGE_BAND of the ink's box's side from one of its edges and
# along EDGE_SPAN of it or more (the sides of a box that a crop cut off at one or two corners: an L, a
# U), running past the rest of the ink by STICK_OUT of its size on both ends, is a printed line.
# Joined at a corner, two such sides were neither a frame nor lines apart, and the digit was read
# with them: 1,000 `cvl-valid` digits with two sides of a box along the crop's edges, all rejected
# (docs/experiments.md, "Sides of a box along the crop's edges").
EDGE_BAND = 0.1
EDGE_SPAN = 0.85


def form_rules(
    mask: np.ndarray,
    labels: np.ndarray,
    stats: np.ndarray,
    line: bool,
    rules: bool = True,
    edges: tuple[bool, bool] = (False, False),
    ink: np.ndarray | None = None,
    page: bool | None = None,
    along_edges: bool = True,
    composited: bool = False,
) -> np.ndarray | None:
    """The pixels of ``mask`` (bool, labelled as ``labels`` with OpenCV's ``stats``) that are printed
    form lines rather than handwriting, or None if there are none.

    - Frames (any image): a box around a digit, or around a row of boxes. The box's straight sides
      go, and so do the straight bars joined to it that span its height (the sides a row of boxes
      shares).
    - Rules (in a line of digits, ``line``; under a single digit, ``rules``): straight lines within
      20 degrees of the horizontal, at least RULE_LENGTH times as long as the marks are high (an
      underline, a comb's base, the top and bottom of a row of boxes), with the straight bars joined
      to them that are short (a comb's teeth), that join two of them (the sides of boxes) or that
      stand TALL_BAR times as tall as the marks apart from them (a margin's rule past them). Under a
      single digit, only rules that run past it on both sides (see STICK_OUT), and else a line the
      digit touches or crosses (`_touching_rule`); ``edges``: whether the ink runs from the image's
      left to its right edge, and from its top to its bottom (a crop of lined or squared paper): then
      lines across the page apart from the digit are not its marks, and a line from top to bottom
      through it is looked for too.
    - The lines of lined or squared paper around a single digit (``page`` True, with ``rules``),
      unless a frame holds the digit; with ``page`` False, only lines that run far past it
      (LINES_PAST); with None, none (a digit cropped tight to its ink, whose own strokes span it).
    - Around a single digit (with ``rules`` and ``along_edges``), straight lines along the edges of
      its image that run past the rest of its ink (`_edge_lines`): a box's sides that the crop cut at
      a corner. (Not in a photo that shows what lies around the page: there the page's edge, taken
      off along the image's edge, left a piece of itself that no longer touched it, read as ink.)

    A digit that touches a line keeps its own strokes: only ink on runs along the line goes.
    ``composited``: ink drawn on a transparent canvas, which has no page, so no margin's rule lighter
    than the pen to look for (`_touching_rules`; the line transform cost about 1.4 ms of the 7 ms such
    a canvas took, nearly every time in vain).
    """
    found = _form_rules(mask, labels, stats, line, rules, edges, ink, page, composited)
    if not line and rules and along_edges and (along := _edge_lines(mask)) is not None:
        if ink is not None:  # grey or blue lines: ink much stronger than theirs on them stays
            along &= _no_stronger_than(ink, along)
        lines = along.view(bool) & mask
        return lines if found is None else found | lines
    return found


def _form_rules(
    mask: np.ndarray,
    labels: np.ndarray,
    stats: np.ndarray,
    line: bool,
    rules: bool,
    edges: tuple[bool, bool],
    ink: np.ndarray | None,
    page: bool | None,
    composited: bool = False,
) -> np.ndarray | None:
    """`form_rules` less the lines along the edges of one digit's image (`_edge_lines`), which it adds."""
    out = np.zeros(mask.shape, np.uint8)
    frames = list(_frames(labels, stats, line))
    if not line and rules and (page or (page is not None and _line_alone(stats, mask.shape))) and not frames:
        ruled = _page_lines(mask, STICK_OUT if page else LINES_PAST)  # (a frame's sides are no page's lines)
        if ruled is not None:
            ruled |= _teeth(mask, ruled)[0]  # a comb's teeth on the lines found
            if ink is not None:  # grey or blue lines: ink much stronger than theirs on them stays
                ruled &= _no_stronger_than(ink, ruled)
            return ruled.view(bool) & mask
    if line or rules:
        _rules(mask, stats, out, edges=line)
        teeth = _teeth(mask, out)[0] if not line and out.any() else None
        if teeth is not None and not teeth.any() and not _sticks_out(mask, out):
            out[:] = 0  # one digit's own long stroke (a 2's flat base), not a line under it
        if not line and not out.any():
            _touching_rules(labels, stats, edges, out, None if composited else ink)
        elif teeth is not None:
            out |= teeth
    for i, frame in frames:
        x, y, w, h = (int(v) for v in stats[i, :4])
        out[y : y + h, x : x + w] |= frame
    if line and ink is not None and out.any():
        # Printed lines lighter than the pen (grey or blue rules) under a line of digits: ink much
        # stronger than theirs on them is a stroke lying along or across them, and stays.
        out &= _no_stronger_than(ink, out)
    return out.view(bool) & mask if out.any() else None


def _frames(labels: np.ndarray, stats: np.ndarray, line: bool) -> Iterator[tuple[int, np.ndarray]]:
    """The components of ``labels`` (OpenCV's ``stats``) that are frames (`_frame`): (label, its
    pixels to take off within its box), one by one."""
    areas = stats[1:, 4]
    marks = np.flatnonzero(areas >= SPECK * areas.max()) + 1 if len(areas) else areas
    for i in range(1, len(stats)):
        x, y, w, h, area = (int(v) for v in stats[i])
        if w >= FRAME_MIN and h >= FRAME_MIN and area <= (0.5 if line else FRAME_FILL) * w * h:
            inside = stats[marks[marks != i]]
            holds = bool(
                (
                    (inside[:, 0] > x)
                    & (inside[:, 1] > y)
                    & (inside[:, 0] + inside[:, 2] < x + w)
                    & (inside[:, 1] + inside[:, 3] < y + h)
                ).any()
            )
            frame = _frame(labels[y : y + h, x : x + w] == i, grow=not line, holds=holds)
            if frame is not None:
                yield i, frame


def _edge_lines(mask: np.ndarray) -> np.ndarray | None:
    """The printed lines along the edges of the image of one digit (``mask``, bool, the ink's box; see
    EDGE_BAND): uint8 1 on their ink but where strokes cross them, or None if there are none."""
    m8 = mask.view(np.uint8)
    found = np.zeros_like(m8)
    ends = []  # each line's first and last pixel along it, and whether it lies across
    for turned in (False, True):
        m = m8.T if turned else m8  # (a view: copied below only where a line may run)
        hh, ww = m.shape
        d = max(2, int(np.ceil(EDGE_BAND * hh)))
        for top in (True, False):
            rows = slice(0, d) if top else slice(hh - d, hh)
            if np.count_nonzero(m[rows].any(axis=0)) < EDGE_SPAN * ww:
                continue  # (most digits: no line can run along this edge)
            band = np.ascontiguousarray(m[rows])
            segments = _hough_segments(band, int(EDGE_SPAN * ww), upright=False)
            if not segments:
                continue
            drawn, r = _line_pixels(band, _trace(band.shape, segments))
            if r > FRAME_LINE * hh:
                continue  # printed lines are thin; a bold stroke's straight side is not
            part = np.zeros((hh, ww), np.uint8)
            part[rows] = _thin_across(band, drawn, r)
            cols = np.flatnonzero(part.any(axis=0))
            if len(cols) < EDGE_SPAN * ww:
                continue
            found |= part.T if turned else part
            ends.append((int(cols[0]), int(cols[-1]) + 1, not turned))
    if not ends:
        return None
    rest = _without_scraps(mask & (found == 0))
    box = _bbox(rest)
    if box is None:
        return None  # nothing else: the digit's own strokes
    y0, y1, x0, x1 = box
    for a, b, across in ends:
        lo, hi, size = (x0, x1, y1 - y0) if across else (y0, y1, x1 - x0)
        if min(lo - a, b - hi) < STICK_OUT * size:
            return None  # a stroke of the digit (a 7's bar) ends where the digit does
    return found


def _no_stronger_than(ink: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """uint8 1 where ``ink`` is at most PEN_OVER times the printed ``lines``' own (uint8, nonzero on
    them; their 75th percentile, as a line's anti-aliased edges are fainter): where it is stronger, a
    pen's stroke lies along or across them."""
    return (ink <= PEN_OVER * _percentile(ink[lines > 0], 75)).view(np.uint8)


def _touching_rules(
    labels: np.ndarray, stats: np.ndarray, edges: tuple[bool, bool], out: np.ndarray, ink: np.ndarray | None = None
) -> None:
    """Mark in ``out`` the lines that one digit touches or crosses (`_touching_rule`), looked for among
    the marks that count (``labels``, ``stats``: OpenCV's components of its ink): not specks and noise,
    nor, where the ink runs from edge to edge (``edges``, see `form_rules`), the lines across the page
    apart from the digit (`_ink_image` drops both later)."""
    areas = stats[:, 4]  # OpenCV's CC_STAT_AREA
    counts = areas >= max(3, SPECK * areas[1:].max())
    hh, ww = labels.shape
    across, upright = edges
    if across:
        counts &= (stats[:, 2] < 0.9 * ww) | (stats[:, 3] > 0.1 * hh)
    if upright:
        counts &= (stats[:, 3] < 0.98 * hh) | (stats[:, 2] > 0.05 * ww)
    counts[0] = False  # the paper
    if not counts.any():
        return
    x0, y0 = stats[counts, 0].min(), stats[counts, 1].min()
    x1 = (stats[counts, 0] + stats[counts, 2]).max()
    y1 = (stats[counts, 1] + stats[counts, 3]).max()
    marks = counts[labels[y0:y1, x0:x1]]
    if x1 - x0 >= TOUCHING_ASPECT * (y1 - y0):  # else no line across it can be long enough
        _touching_rule_reduced(marks, out[y0:y1, x0:x1])
    if y1 - y0 < TOUCHING_ASPECT * (x1 - x0):
        return
    whole = upright and y0 == 0 and y1 == hh
    if whole:
        # Ink from the image's top to its bottom (a crop of lined or squared paper): a line from top to
        # bottom through the digit, the same way on its side.
        rest = np.ascontiguousarray((marks & (out[y0:y1, x0:x1] == 0)).T)
        _touching_rule_reduced(rest, out[y0:y1, x0:x1].T, upright=True)
    if ink is not None and not out.any():
        # ...and where it ends short of the frame (a photo of a page with a margin's rule), or where a
        # stroke lies along it for a stretch (`loose`: the line is whole only with the stroke), one
        # much lighter than the pen: a digit's own stroke from top to bottom (a 1's, a 4's stem) is as
        # dark as the rest of it (looked for in every tall digit, without this, stems went: cvl-valid
        # 97.76 -> 97.60% read right; docs/experiments.md, "Lined paper turned in a photo", "Page
        # lines the transform missed").
        found = np.zeros_like(out)
        if _ends_light(marks, ink[y0:y1, x0:x1]):
            _touching_rule_reduced(np.ascontiguousarray(marks.T), found[y0:y1, x0:x1].T, upright=True, loose=True)
        if found.any():
            pen = _percentile(ink[(labels > 0) & (found == 0)], 75)
            if _percentile(ink[found > 0], 75) <= RULE_LIGHTER * pen:
                out |= found


def _ends_light(marks: np.ndarray, ink: np.ndarray) -> bool:
    """Whether the ink at the top and at the bottom of ``marks`` (bool; ``ink``, the same box) is all
    lighter than the pen (its 90th percentile) by RULE_END_DARK: where a margin's rule much lighter
    than the pen runs past a digit at both ends, it alone is there. Most digits' strokes reach one end
    at the pen's strength, and so spare the line transform (`_touching_rules`)."""
    pen = _percentile(ink[marks], 90)
    b = max(1, round(RULE_END_ROWS * marks.shape[0]))
    for rows in (slice(0, b), slice(marks.shape[0] - b, None)):
        m = marks[rows]
        if m.any() and float(ink[rows][m].max()) > RULE_END_DARK * pen:
            return False
    return True


def _sticks_out(mask: np.ndarray, rules: np.ndarray) -> bool:
    """Whether the rules found (``rules``, uint8 1) in the image of one digit (``mask``) run past
    the rest of its ink on both sides, by at least STICK_OUT of the rest's height each: a line the
    digit was written on does, a digit's own flat stroke (a 2's base) does not."""
    rest = mask & (rules == 0)
    box = _bbox(rest)
    if box is None:
        return True  # nothing but rules: a blank ruled page
    y0, y1, x0, x1 = box
    _, _, r0, r1 = _bbox(rules.view(bool))  # type: ignore[misc]  # the caller found rules
    return min(x0 - r0, r1 - x1) >= STICK_OUT * (y1 - y0)


def _rules(mask: np.ndarray, stats: np.ndarray, out: np.ndarray, edges: bool = False) -> None:
    """Mark in ``out`` (uint8, 1: rule) the rules of a line of digits (see `form_rules`); ``stats``:
    OpenCV's statistics of ``mask``'s components. ``edges`` (a line of digits): a rule along the
    ink's edge counts (see `_may_hold_rule`): the base of a box whose top the crop cut off, the last
    rows of an ink box not a whole number of blocks high, was missed, and its sides read as 1s."""
    import cv2

    # How high the marks are: the components not much wider than high (not a rule and what touches
    # it), the heavier ones; with none, the whole ink's height.
    boxes = stats[1:]
    marks = boxes[(boxes[:, 2] <= 2 * boxes[:, 3]) & (boxes[:, 3] >= MIN_DIGIT_HEIGHT)]
    marks = marks[marks[:, 4] >= 0.1 * marks[:, 4].max()] if len(marks) else marks
    height = _percentile(marks[:, 3], 50) if len(marks) else float(mask.shape[0])  # the median, less overhead
    # A rule runs under (or over) most of the line: two digits' strokes joined in a line (a 5's flag
    # and a 7's bar, a 2's base and a 6) are straight for a part of it at most.
    length = int(max(RULE_LENGTH * height, RULE_SPAN * mask.shape[1], 3 * MIN_DIGIT_HEIGHT))
    found = _rule_band(mask, length, edges=edges)
    if found is None:
        return
    band, r, near, _ = found
    m8 = mask.view(np.uint8)
    out |= _thin_across(m8, band, r)
    # The bars joined to the rules: a comb's teeth (short), the sides of boxes (joining two rules).
    n, sub, bar_stats, _ = cv2.connectedComponentsWithStats(m8 & (1 - band), connectivity=8)
    joined, standing = [], []
    for i in range(1, n):
        x, y, w, h, _area = (int(v) for v in bar_stats[i])
        piece = sub[y : y + h, x : x + w] == i
        touching = near[y : y + h, x : x + w] & piece
        if touching.any():
            rows = np.flatnonzero(touching.any(axis=1))
            joined.append((x, y, w, h, piece, rows[0] <= 0.2 * h and rows[-1] >= 0.8 * h))
        elif h >= MIN_DIGIT_HEIGHT:
            standing.append(h)
    if not len(marks) and len(joined) >= 2:
        # No mark apart from the rules and what touches them (an empty comb, or every digit on the
        # line): a tooth is short against the spacing of what stands on the line instead.
        centres = sorted(x + w / 2 for x, _, w, *_ in joined)
        height = float(np.median(np.diff(centres)))
    tall = TALL_BAR * float(np.median(standing)) if standing else float("inf")
    for x, y, w, h, piece, joins_two in joined:
        if (
            (joins_two and _is_bar(piece, r))
            or (h < 0.5 * height and _is_bar(piece, r, elongated=False))
            or (h >= tall and _is_bar(piece, r))
        ):
            out[y : y + h, x : x + w] |= piece.view(np.uint8)
        elif joins_two and (bar := _cross_bar(piece, h)) is not None:  # a digit touching a box's side
            out[y : y + h, x : x + w] |= bar


def _rule_band(
    mask: np.ndarray, length: int, edges: bool = False, again: bool = False
) -> tuple[np.ndarray, int, np.ndarray, float] | None:
    """The printed lines of ``mask`` (bool) at least ``length`` long within 20 degrees of the
    horizontal: their ink (uint8 1, `_line_pixels`), its radius, the ink dilated by 2 px (to test what
    touches it) and the longest line's length; None if there are none. ``edges``: see `_may_hold_rule`;
    ``again``: see `_hough_segments` and HOUGH_AGAIN."""
    import cv2

    if mask.shape[1] < length * RULE_COS:
        return None  # no rule fits across the ink (most single digits): spare the costly Hough transform
    m8 = mask.view(np.uint8)
    coarse = _may_hold_rule(m8, length, edges)
    if not coarse:
        return None
    # (asked again only where the coarse transform saw a line as long as that asks for)
    segments = _hough_segments(m8, length, upright=False, again=again and coarse >= HOUGH_AGAIN * length)
    if not segments:
        return None
    band, r = _line_pixels(m8, _trace(m8.shape, segments))
    # Each a printed line: along nearly all of it, ink on long straight runs (a line the transform
    # drew across thick strokes crosses runs as short as they are thick).
    near = cv2.dilate(band, np.ones((5, 5), np.uint8))
    kept = [s for s in segments if _along(near, s[:2], s[2:]) >= FRAME_COVER]
    if not kept:
        return None
    if len(kept) < len(segments):
        band, r = _line_pixels(m8, _trace(m8.shape, kept))
        near = cv2.dilate(band, np.ones((5, 5), np.uint8))
    return band, r, near, max(float(np.hypot(s[2] - s[0], s[3] - s[1])) for s in kept)


def _thin_across(m8: np.ndarray, band: np.ndarray, r: int) -> np.ndarray:
    """The rule's pixels of ``band`` (found in ``m8``, radius ``r``) that are no stroke on it."""
    import cv2

    # Ink thicker across the rule than the rule is a stroke on it (a 7's bar along a ruled line, a
    # stroke crossing it): ink on vertical runs longer than THICK_LINE rule widths stays. The pieces
    # joined to the rules are still found with the whole band, so a comb's tooth stays one piece.
    t = int(np.ceil(THICK_LINE * (r - 1))) + 1
    # (paper beyond the edges: the crop ends at the ink, and a rule at its edge is not a longer run)
    column = np.ones((t, 1), np.uint8)
    thick = cv2.morphologyEx(m8, cv2.MORPH_OPEN, column, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return band & (1 - thick)


def _blocks(mask: np.ndarray, f: int) -> np.ndarray:
    """``mask`` (bool or uint8 0/1) padded with paper to whole f x f blocks and reduced to them, a block
    with any ink being ink: bool."""
    import cv2

    h, w = mask.shape
    m8 = cv2.copyMakeBorder(mask.view(np.uint8), 0, -h % f, 0, -w % f, cv2.BORDER_CONSTANT, value=0)
    # (a block's mean of 0s and 255s is above 0 where any of it is ink)
    return cv2.resize(m8 * np.uint8(255), (m8.shape[1] // f, m8.shape[0] // f), interpolation=cv2.INTER_AREA) > 0


def _unblocked(found: np.ndarray, f: int, shape: tuple[int, ...]) -> np.ndarray:
    """`_blocks`' inverse for marks (uint8): each block's value on its f x f pixels, cut to ``shape``."""
    import cv2

    return cv2.resize(found, (found.shape[1] * f, found.shape[0] * f), interpolation=cv2.INTER_NEAREST)[
        : shape[0], : shape[1]
    ]


def _line_alone(stats: np.ndarray, shape: tuple[int, ...]) -> bool:
    """Whether one of the components (OpenCV's ``stats`` of a mask ``shape`` high and wide) is long
    and thin enough to be a page's line across GRID_SPAN of the mask within 20 degrees, either way:
    `_page_lines` asks one line to stand apart from the digit, and this spares its two transforms
    around every other digit (profiled on 400 canvas drawings without it: about a fifth of
    `to_mnist`'s time)."""
    w, h = stats[1:, 2], stats[1:, 3]
    across = (w >= RULE_COS * GRID_SPAN * shape[1]) & (h <= RULE_SLOPE * w + PAGE_LINE * shape[0])
    upright = (h >= RULE_COS * GRID_SPAN * shape[0]) & (w <= RULE_SLOPE * h + PAGE_LINE * shape[1])
    return bool((across | upright).any())


def _page_lines(mask: np.ndarray, past: float = STICK_OUT) -> np.ndarray | None:
    """The lines of lined or squared paper in the image of one digit (``mask``, bool, the ink's box),
    found on the ink reduced to TOUCHING_SIDE pixels: straight lines each across GRID_SPAN of it, uint8
    1 on their ink but where strokes cross them; or None. Squared paper: two or more each way,
    GRID_LINES in all. Lined paper (or squared paper whose lines one way were not all found): two or
    more one way that run past the rest of the ink (`_without_scraps`) on both sides, by STICK_OUT of
    its size across them each (a digit's own straight strokes end where it does), one of them apart
    from it (`_line_apart`), either way or both. Lines are counted as the separate pieces of their ink
    (a thick line holds several segments). ``past``: how far the lines must run past the rest of the
    ink, in its size across them; above STICK_OUT (lines that end within the image, `LINES_PAST`),
    squared paper is not looked for (its lines across the digit are part of the rest there)."""
    f = -(-max(mask.shape) // TOUCHING_SIDE)
    small = _blocks(mask, f)
    parts, bands, counts = [], [], []
    for turned in (False, True):
        s8 = np.ascontiguousarray(small.T if turned else small).view(np.uint8)
        found = _lines_across(s8)
        counts.append(0 if found is None else found[2])
        if found is None:
            parts.append(None)
            bands.append(None)
            continue
        band, r, _ = found
        part = _thin_across(s8, band, r)
        parts.append(part.T if turned else part)
        bands.append(band.T if turned else band)
    if parts[0] is not None and parts[1] is not None and sum(counts) >= GRID_LINES and past <= STICK_OUT:
        found = parts[0] | parts[1] | (bands[0] & bands[1])  # and where the lines cross each other
        return _unblocked(found, f, mask.shape) & mask.view(np.uint8)
    found = np.zeros(small.shape, np.uint8)
    for turned, (part, band) in enumerate(zip(parts, bands, strict=True)):
        if part is None:
            continue
        off = small & (band == 0)  # the ink off the lines found
        ends = _line_ends(off, band, r, turned)
        rest = _without_scraps(off & ~ends)
        box = _bbox(rest.T if turned else rest)
        if box is None:
            continue
        y0, y1, x0, x1 = box
        w = small.shape[0] if turned else small.shape[1]
        if min(x0, w - x1) >= past * (y1 - y0) and _line_apart(band, rest):
            found |= part | ends
    return _unblocked(found, f, mask.shape) & mask.view(np.uint8) if found.any() else None


def straight_lines(mask: np.ndarray) -> tuple[int, int]:
    """How many straight lines apart cross ``mask`` (bool) across and from top to bottom, each across
    GRID_SPAN of it within 20 degrees (see `_lines_across`), found on it reduced to TOUCHING_SIDE."""
    small = _blocks(mask, -(-max(mask.shape) // TOUCHING_SIDE))
    counts = [_lines_across(np.ascontiguousarray(m).view(np.uint8)) for m in (small, small.T)]
    return (0 if counts[0] is None else counts[0][2], 0 if counts[1] is None else counts[1][2])


def _lines_across(s8: np.ndarray) -> tuple[np.ndarray, int, int] | None:
    """The straight lines of ``s8`` (uint8 0/1) across GRID_SPAN of its width within 20 degrees of the
    horizontal, where two or more lie apart: their ink (`_line_pixels`), its radius, and how many
    separate lines it makes (a thick line holds several segments); else None."""
    import cv2

    segments = _hough_segments(s8, int(GRID_SPAN * s8.shape[1]), upright=False)
    segments += _parallel_lines(s8, segments)
    at = sorted((a[1] + a[3]) / 2 for a in segments)
    if sum(1 for a, b in zip([-99.0, *at], at, strict=False) if b - a > 2) < 2:
        return None
    band, r = _line_pixels(s8, _trace(s8.shape, segments))
    if r > PAGE_LINE * min(s8.shape):
        return None  # a page's lines are thin; chords through a bold digit's strokes are not
    count = cv2.connectedComponents(band, connectivity=8)[0] - 1
    return (band, r, count) if count >= 2 else None


def _line_ends(rest: np.ndarray, band: np.ndarray, r: int, turned: bool) -> np.ndarray:
    """The pieces of ``rest`` (bool: the ink off the lines found in ``band``, uint8 1, radius ``r``)
    that are the ends of those lines: at the ink box's side the lines run to (left or right; top or
    bottom when ``turned``) or within ``r`` of it, touching a line, and no thicker across it than
    LINE_END rule widths. The transform's segments stop short of a line's blurred or turned end, and
    its fringe there stayed as ink past the digit and hid that the lines run on past it."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(rest.view(np.uint8), connectivity=8)
    if n == 1:
        return np.zeros(rest.shape, bool)
    near = np.zeros(n, bool)
    near[np.unique(labels[cv2.dilate(band, np.ones((3, 3), np.uint8)).view(bool)])] = True
    x, y, w, h = (stats[:, k] for k in range(4))
    start, length, across, side = (y, h, w, rest.shape[0]) if turned else (x, w, h, rest.shape[1])
    ends = near & ((start <= r) | (start + length >= side - r)) & (across <= LINE_END * (2 * r + 1))
    ends[0] = False  # the paper
    return ends[labels]


def _parallel_lines(s8: np.ndarray, segments: list[np.ndarray]) -> list[np.ndarray]:
    """Lines of ``s8`` (uint8 0/1) parallel to the ``segments`` found (their median slope), each with
    ink across GRID_SPAN of its width or more, from edge to edge: (x0, y0, x1, y1). The ink's
    projection along that slope finds what OpenCV's probabilistic transform misses: it takes the pixels
    of every line it tries off the image, and tries through a digit's strokes ate a page's line that
    crosses the digit."""
    if not segments:
        return []
    a = np.asarray(segments, np.float64)
    slope = float(np.median((a[:, 3] - a[:, 1]) / np.maximum(a[:, 2] - a[:, 0], 1)))
    w = s8.shape[1]
    ys, xs = np.nonzero(s8)
    low = min(0.0, -slope * (w - 1))  # the least offset y - slope x of a pixel
    counts = np.bincount(np.rint(ys - slope * xs - low).astype(np.int64), minlength=1)
    return [
        np.array([0, round(k + low), w - 1, round(k + low + slope * (w - 1))], np.int64)
        for k in np.flatnonzero(counts >= GRID_SPAN * w)
    ]


def _without_scraps(mask: np.ndarray) -> np.ndarray:
    """``mask`` (bool) without the pieces that are small against its biggest (see SCRAP_AREA)."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    if n <= 2:
        return mask
    areas, sides = stats[:, cv2.CC_STAT_AREA], stats[:, 2:4].max(axis=1)
    big = int(np.argmax(areas[1:])) + 1
    keep = (areas >= SCRAP_AREA * areas[big]) | (sides >= SCRAP_SIZE * sides[big])
    keep[0] = False  # the paper
    return keep[labels]


def _line_apart(band: np.ndarray, rest: np.ndarray) -> bool:
    """Whether one of the lines in ``band`` (uint8 1) touches none of the ``rest`` of the ink (bool):
    a page's line beyond the digit. A digit's own straight strokes (an 8's flat top and base in a
    bitmap cropped to it) are joined to the rest of it."""
    import cv2

    n, lines = cv2.connectedComponents(band, connectivity=8)
    near = cv2.dilate(rest.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool)
    touched = np.unique(lines[near])
    return n - 1 > np.count_nonzero(touched)


def _touching_rule_reduced(mask: np.ndarray, out: np.ndarray, upright: bool = False, loose: bool = False) -> None:
    """`_touching_rule` on ``mask`` reduced by a whole factor to TOUCHING_SIDE pixels or less (a block
    with any ink is ink), its line and teeth marked in ``out`` at full size (the ink of their blocks)."""
    import cv2

    f = -(-max(mask.shape) // TOUCHING_SIDE)
    if f == 1:
        _touching_rule(mask, out, upright, loose=loose)
        return
    small = _blocks(mask, f)
    found = np.zeros(small.shape, np.uint8)
    _touching_rule(small, found, upright, apart=True, loose=loose)
    if found.any():
        up = _unblocked(found, f, mask.shape)
        ink = mask.view(np.uint8)
        band = up & 1 & ink
        # The line's blocks hold the strokes that cross it too: at full size, ink on vertical runs
        # longer than THICK_LINE times the line's width stays, as in `_thin_across`.
        across = band.sum(axis=0, dtype=np.int32)
        t = int(np.ceil(THICK_LINE * np.median(across[across > 0]))) + 1
        thick = cv2.morphologyEx(
            ink, cv2.MORPH_OPEN, np.ones((t, 1), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0
        )
        out |= (band & (1 - thick)) | ((up >> 1) & ink)


def _touching_rule(
    mask: np.ndarray, out: np.ndarray, upright: bool = False, apart: bool = False, loose: bool = False
) -> None:
    """Mark in ``out`` (uint8, 1: rule) a line that one digit (``mask``, bool) touches or crosses:
    an underline it rests on, a ruled line through it. `_rules` measures a line against the marks'
    height, which is the digit's and the line's together where they touch; here the line spans the
    ink and is measured against the rest of it once taken off (see RULE_UNDER). ``upright``: ``mask``
    is a digit's ink turned on its side, the line one from top to bottom (no RULE_BELOW). ``apart``:
    mark the line 1 and the teeth 2 (else both 1). ``loose``: the line need be whole (RULE_WHOLE) only
    as the ink on runs along it, strokes lying along it included (see `_touching_rules`)."""
    import cv2

    w = mask.shape[1]
    found = _rule_band(mask, int(max(RULE_SPAN * w, 3 * MIN_DIGIT_HEIGHT)), edges=True, again=True)
    if found is None:
        return
    band, r, _, longest = found
    m8 = mask.view(np.uint8)
    line = _thin_across(m8, cv2.dilate(band, _disc(FRAME_GROW)) & m8, r)  # grown: see FRAME_GROW
    if not line.any():
        return
    if upright:  # a margin's rule or a page's line from top to bottom: no cell, no teeth
        teeth, cell = np.zeros_like(line), False
    else:
        teeth, cell = _teeth(mask, line)
    rest, lbox = _bbox(mask & (line == 0) & (teeth == 0)), _bbox(line.view(bool))
    if rest is None or lbox is None:
        return
    y0, y1, x0, x1 = rest
    height = y1 - y0
    ly0, ly1, lx0, lx1 = lbox
    across = line.sum(axis=0, dtype=np.int32)
    if (
        height >= 0.5 * mask.shape[0]  # the digit is most of the ink's height; the line is thin
        and np.median(across[across > 0]) <= RULE_THIN * height
        and longest >= RULE_UNDER * height
        and (cell or min(x0 - lx0, lx1 - x1) >= RULE_PAST * height)  # a cell's sides end it
        and (upright or (ly0 + ly1) / 2 >= y0 + RULE_BELOW * height)
        and (band if loose else line).any(axis=0)[lx0:lx1].mean() >= (RULE_WHOLE_CELL if cell else RULE_WHOLE)
    ):
        out |= line | (teeth << 1 if apart else teeth)


def _teeth(mask: np.ndarray, line: np.ndarray) -> tuple[np.ndarray, bool]:
    """The straight upright bars joined to ``line`` (uint8 1: a printed line under one digit, in its
    ``mask``) on both sides of the digit, not under it: a comb's teeth, the sides of a cell open at
    the top, however tall. The digit is what else is left, or, where all is bars (a 1 in a comb), the
    bar nearest the line's middle. uint8 1 on them (none unless there are bars on both sides), and
    whether the digit was more than bars (then they surely stand apart from it)."""
    import cv2

    out = np.zeros(mask.shape, np.uint8)
    n, sub, stats, _ = cv2.connectedComponentsWithStats((mask & (line == 0)).view(np.uint8), connectivity=8)
    if n < 3:
        return out, False  # no digit and tooth apart
    cols = line.any(axis=0)
    r = int(np.ceil(line.sum() / max(1, cols.sum()))) + 1  # the line's width, and a pixel
    near = cv2.dilate(line, np.ones((3, 3), np.uint8)).view(bool)
    biggest = int(stats[1:, cv2.CC_STAT_AREA].max())
    bars, others = [], []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area < SPECK * biggest:
            continue  # a speck: neither
        piece = sub[y : y + h, x : x + w] == i
        if h >= 2 * w and (near[y : y + h, x : x + w] & piece).any() and _is_bar(piece, round(TOOTH_WIDTH * r)):
            bars.append((x, x + w, i))
        else:
            others.append((x, x + w))
    if not bars:
        return out, False
    apart = bool(others)
    if not others:
        middle = (np.flatnonzero(cols)[0] + np.flatnonzero(cols)[-1]) / 2
        nearest = min(bars, key=lambda b: abs((b[0] + b[1]) / 2 - middle))
        bars.remove(nearest)
        others.append(nearest[:2])
    d0, d1 = min(o[0] for o in others), max(o[1] for o in others)
    # (a bar may stand within a line's width of the digit's box: a bold hand in a narrow cell)
    left, right = [b for b in bars if b[1] <= d0 + r], [b for b in bars if b[0] >= d1 - r]
    if not (left and right):
        return out, False  # one side's bar alone may be the digit's own stroke (a 4's, on its bar)
    for _, _, i in left + right:
        out |= (sub == i).view(np.uint8)
    return out, apart


# OpenCV's probabilistic transform takes the pixels of every line it tries off the image, short or
# long: in a thick band (a dark margin's rule 89 blocks long, 3-5 thick, crossed by a digit's
# strokes) a slanted try through the band and a stroke ate the band's pixels, and the rule was not
# found asking half its length in votes (40), though it was asking 20 or 60. Where the coarse
# transform (`_may_hold_rule`, itself asked again so) saw a line HOUGH_AGAIN of the length long and
# the full one found none, it runs again asking HOUGH_AGAIN of the length in votes, where only long
# lines start a try (docs/experiments.md, "Lines that end within the photo").
HOUGH_AGAIN = 0.8
COARSE = 4  # `_may_hold_rule` looks for rules in blocks of COARSE x COARSE pixels first


def _may_hold_rule(m8: np.ndarray, length: int, edges: bool = False) -> float:
    """Whether the mask may hold a rule ``length`` long: 0 if not, else the longest line found here in
    pixels of the mask (infinite where the mask is too small to reduce). The same Hough transform on
    the mask reduced to blocks of COARSE x COARSE pixels (a block with any ink is ink), where a rule
    is still a line but there are a sixteenth of the pixels to vote. The full transform took about
    half of the time of `ink_image` on a photographed number (4.4 of 8.5 ms, one Xeon core); a line
    of digits without rules now spends about a tenth of that here and stops. ``edges``: the last
    rows and columns that make no whole block count too, and the reduced mask gets a block of paper
    all round (OpenCV's transform missed a line along its edge: an underline is the lowest ink of one
    digit's crop)."""
    h, w = m8.shape
    if min(h, w) < 4 * COARSE:
        return float("inf")
    if edges:
        small = np.pad(_blocks(m8, COARSE).view(np.uint8), 1)
    else:
        hs, ws = h // COARSE, w // COARSE
        small = m8[: hs * COARSE, : ws * COARSE].reshape(hs, COARSE, ws, COARSE).max(axis=(1, 3))
    # (asked again as the full transform is, HOUGH_AGAIN: the same band, coarser, was missed here too)
    asked = max(3, int(0.6 * length / COARSE))  # in blocks
    segments = _hough_segments(np.ascontiguousarray(small), asked, upright=False, again=True)
    return COARSE * max((float(np.hypot(s[2] - s[0], s[3] - s[1])) for s in segments), default=0.0)


def _hough_segments(m8: np.ndarray, length: int, upright: bool, again: bool = False) -> list[np.ndarray]:
    """The straight lines of ``m8`` (uint8 0/1) at least ``length`` long (gaps up to a tenth of it),
    within 20 degrees of the horizontal (or, ``upright``, of the vertical): segments (x0, y0, x1, y1).
    ``again``: where none is found, look again asking HOUGH_AGAIN of ``length`` in votes."""
    import cv2

    gap = max(3, length // 10)
    found = cv2.HoughLinesP(m8, 1, np.pi / 360, length // 2, minLineLength=length, maxLineGap=gap)
    if found is None and again:
        found = cv2.HoughLinesP(m8, 1, np.pi / 360, int(HOUGH_AGAIN * length), minLineLength=length, maxLineGap=gap)
    if found is None:
        return []
    segments = found.reshape(-1, 4).astype(np.int64)
    across, along = (segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1])
    if upright:
        across, along = along, across
    return list(segments[np.abs(along) <= RULE_SLOPE * np.abs(across)])


def _trace(shape: tuple[int, ...], segments: list[np.ndarray]) -> np.ndarray:
    """Line segments (x0, y0, x1, y1) drawn one pixel wide: uint8 (h, w), 1 on them."""
    import cv2

    drawn = np.zeros(shape, np.uint8)
    for x0, y0, x1, y1 in segments:
        cv2.line(drawn, (int(x0), int(y0)), (int(x1), int(y1)), 1, 1)
    return drawn


def _along(a: np.ndarray, p: np.ndarray, q: np.ndarray) -> float:
    """The mean of ``a`` over points a pixel apart on the segment from ``p`` to ``q`` ((x, y) each)."""
    h, w = a.shape
    t = np.linspace(0.0, 1.0, max(8, int(np.hypot(*(q - p)))))
    pts = np.rint(p + t[:, None] * (q - p)).astype(int)
    return float(a[np.clip(pts[:, 1], 0, h - 1), np.clip(pts[:, 0], 0, w - 1)].mean())


def _line_pixels(m8: np.ndarray, drawn: np.ndarray, axes: str = "h") -> tuple[np.ndarray, int]:
    """The ink of ``m8`` (uint8 0/1) that belongs to the printed lines traced one pixel wide in
    ``drawn`` (uint8 0/1), and a radius that reaches across them: the ink near the traces on runs
    along them ("h": horizontal runs, "v": vertical, "hv": either) twice as long as the line is
    wide, so that strokes crossing the line or resting on it stay."""
    import cv2

    # Distances to the nearest paper, with paper all round: a piece that fills its own box (a solid
    # bar) has no paper inside it, and OpenCV then gives a distance of about 1e20.
    dist = cv2.distanceTransform(cv2.copyMakeBorder(m8, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0), cv2.DIST_L2, 3)
    dist = dist[1:-1, 1:-1]
    half = _percentile(cv2.dilate(dist, np.ones((5, 5), np.uint8))[drawn > 0], 50)  # the line's half width
    r = int(np.ceil(2 * half)) + 1  # a trace may lie along either edge of the printed line
    near = cv2.dilate(drawn, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) & m8
    k = max(3, round(4 * half))
    band = np.zeros_like(m8)
    for axis, kernel in (("h", (1, k)), ("v", (k, 1))):
        if axis in axes:
            band |= cv2.morphologyEx(near, cv2.MORPH_OPEN, np.ones(kernel, np.uint8))
    return band, r


def _cross_bar(piece: np.ndarray, span: float) -> np.ndarray | None:
    """In ``piece`` (bool), a digit joined to a box's side: the side's pixels (uint8), found as a
    straight line within 20 degrees of the vertical at least 0.8 ``span`` long; None if there is none."""

    p8 = piece.view(np.uint8)
    upright = _hough_segments(p8, max(3, int(0.8 * span)), upright=True)
    return _line_pixels(p8, _trace(p8.shape, upright), "v")[0] if upright else None


def _is_bar(piece: np.ndarray, r: int, elongated: bool = True) -> bool:
    """Whether ``piece`` (bool) is about as wide as a printed line at most (``r``: `_line_pixels`'
    radius, the line's width and a pixel) and, if ``elongated``, at least twice as long: a straight bar."""
    import cv2

    pts = np.column_stack(np.nonzero(piece)[::-1]).astype(np.float32)
    (_, _), (a, b), _ = cv2.minAreaRect(pts)
    return min(a, b) <= r + 2 and (not elongated or max(a, b) >= 2 * min(a, b))


def _frame(comp: np.ndarray, grow: bool = False, holds: bool = False) -> np.ndarray | None:
    """If ``comp`` (bool, one component's box) is a frame (see `form_rules`), its pixels to take off
    (uint8, 1: frame); else None. ``grow``: see FRAME_GROW. ``holds``: another mark lies within its
    box (see FRAME_LINE_HOLDING)."""
    import cv2

    c8 = comp.view(np.uint8)
    contours, _ = cv2.findContours(c8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    outline = cv2.convexHull(max(contours, key=cv2.contourArea))
    quad = cv2.approxPolyDP(outline, 0.04 * cv2.arcLength(outline, True), True)[:, 0].astype(np.float64)
    if len(quad) != 4 or cv2.contourArea(quad.astype(np.float32)) < 0.5 * comp.size:
        return None
    sides = [quad[(k + 1) % 4] - quad[k] for k in range(4)]
    lengths = [float(np.linalg.norm(s)) for s in sides]
    for k in range(4):
        cos = abs(float(sides[k - 1] @ sides[k])) / (lengths[k - 1] * lengths[k] + 1e-9)
        if cos > np.sin(np.radians(FRAME_CORNER)):
            return None  # not square enough at a corner
    edges = np.zeros_like(c8)
    cv2.polylines(edges, [np.rint(quad).astype(np.int32)], True, 1, 1)
    band, r = _line_pixels(c8, edges, "hv")
    if r > FRAME_LINE_HOLDING * min(lengths):
        return None  # printed lines are thin for the box they make; a letter's strokes are not
    if grow:
        band = cv2.dilate(band, _disc(FRAME_GROW)) & c8
    if r > FRAME_LINE * min(lengths) and not holds:
        # Lines that thick make a frame only round a digit: one apart within it, or one touching it
        # whose strokes are more than the frame's ragged inner edge.
        rest = c8 & (1 - cv2.dilate(band, _disc(FRAME_GROW)))
        if rest.sum() < FRAME_REST * band.sum():
            return None
    # Each side is a printed line: straight ink along nearly all of it (a letter's outline, a
    # digit's curve, is straight along a part at most).
    near = cv2.dilate(band, np.ones((5, 5), np.uint8))
    if any(_along(near, quad[k], quad[(k + 1) % 4]) < FRAME_COVER for k in range(4)):
        return None
    # The bars that were joined to the frame and span its height: the sides a row of boxes shares.
    # (A single box has none: a 1 joined to it stays.)
    if max(lengths) < ROW_OF_BOXES * min(lengths):
        return band
    n, sub, stats, _ = cv2.connectedComponentsWithStats(c8 & (1 - band), connectivity=8)
    span = min(lengths) - 2 * r  # the frame's height inside
    for i in range(1, n):
        x, y, bw, bh, _area = (int(v) for v in stats[i])
        piece = sub[y : y + bh, x : x + bw] == i
        if max(bw, bh) >= 0.8 * span and _is_bar(piece, r):
            band[y : y + bh, x : x + bw] |= piece.view(np.uint8)
        elif bh >= 0.8 * span and (bar := _cross_bar(piece, span)) is not None:  # a digit touching a side
            band[y : y + bh, x : x + bw] |= bar
    return band

"""The closed ShapesWorld vocabulary: shapes, colours, counts, relations and the image geometry.

Kept deliberately small so a tiny model trained on one CPU thread can learn it; every string the
generator writes and the prompt parser reads is built from these tables.
"""

from __future__ import annotations

SHAPES = ("circle", "square", "triangle", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
SINGULARS = {v: k for k, v in PLURALS.items()}

# Saturated, mutually distant RGB values so nearest-palette quantisation survives VQ blur.
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
}
# Mid-grey, not black: against grey every colour has a distinct sign pattern per RGB channel
# (red +--, green -+-, blue --+, yellow ++-). HF's VQ decoder/encoder normalise each channel per
# image (GroupNorm with one channel per group at this width), which erases magnitudes but keeps
# signs; on black, all four colours are +++ and came out of the decoder confused.
BACKGROUND = (128, 128, 128)

COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
WORD_COUNTS = {v: k for k, v in COUNT_WORDS.items()}

RELATIONS = ("left of", "right of", "above", "below")

# GenEval's six compositional categories.
CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")

# Geometry: a GRID x GRID board of CELL-pixel cells; each object fills the central SHAPE_SIZE
# pixels of one cell, so neighbours are always separated by CELL - SHAPE_SIZE background pixels
# (connected components never merge) and each object lines up with one VQ/vision token.
GRID = 4
CELL = 8
SHAPE_SIZE = 6
IMAGE_SIZE = GRID * CELL

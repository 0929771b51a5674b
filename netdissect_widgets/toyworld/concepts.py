"""The concepts and scene classes of the toy world.

Every pixel of a rendered scene carries up to four labels, one per channel of
the segmentation (``L = 4``)::

    channel 0: object    (sky, tree, building, ...)
    channel 1: part      (roof, window, door, trunk, ...)
    channel 2: material  (brick, wood, glass, metal, ...)
    channel 3: color     (white, black, red, ...; computed from the pixel's RGB)

A label value is a concept id: an index into :data:`CONCEPTS`. Id 0 is the
"no label" concept, named ``"-"`` with category ``"-"``; a channel holds 0 where
it has nothing to say about a pixel (a sky pixel has no part and no material).

>>> from netdissect_widgets.toyworld import CONCEPTS, CLASSES
>>> CONCEPTS.index("tree"), CONCEPTS[CONCEPTS.index("door")].category
(6, 'part')
>>> CONCEPTS.names[0], len(CLASSES)
('-', 10)

The ids are part of the contract with the trained toy models
(``toyworld/weights``): append new concepts at the end of their list, never
renumber.
"""
from __future__ import annotations

import difflib
from typing import Iterator, NamedTuple, Sequence

#: Label channels of a segmentation, in order (``seg[:, c]`` holds channel ``c``).
CHANNELS: tuple[str, ...] = ("object", "part", "material", "color")

OBJECTS = (
    "sky", "cloud", "sun", "moon", "mountain", "tree", "grass", "water", "sand",
    "road", "snow", "building", "car", "boat", "fence", "person", "field",
    "cactus", "lamp", "pier",
)
PARTS = (
    "roof", "window", "door", "wall", "chimney", "trunk", "foliage", "wheel",
    "hull", "sail", "mast", "head", "torso", "leg",
)
MATERIALS = (
    "brick", "wood", "glass", "metal", "stone", "fabric", "asphalt", "plaster",
    "tile", "concrete",
)
COLORS = (
    "white", "black", "gray", "red", "orange", "yellow", "green", "blue",
    "brown", "purple", "pink",
)

#: Scene classes; index = label returned by the renderer and the dataset.
CLASSES: list[str] = [
    "beach", "forest", "farm", "street", "lake", "mountain", "night_village",
    "desert", "harbor", "winter",
]


class Concept(NamedTuple):
    """One concept: its id (index in :data:`CONCEPTS`), name and category."""

    id: int
    name: str
    category: str


class ConceptSet:
    """An ordered, immutable list of named concepts; index = concept id.

    Parameters
    ----------
    concepts : sequence of (name, category)
        Id 0 must be ``("-", "-")`` (no label). Names must be unique.
    """

    def __init__(self, concepts: Sequence[tuple[str, str]]):
        pairs = [(str(n), str(c)) for n, c in concepts]
        if not pairs or pairs[0] != ("-", "-"):
            raise ValueError('concept 0 must be ("-", "-") meaning "no label"')
        names = [n for n, _ in pairs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"concept names must be unique; repeated: {dupes}")
        self._names = tuple(names)
        self._categories = tuple(c for _, c in pairs)
        self._index = {n: i for i, n in enumerate(names)}

    @property
    def names(self) -> list[str]:
        """Concept names, index = id (``names[0] == "-"``)."""
        return list(self._names)

    @property
    def categories(self) -> list[str]:
        """Concept categories, index = id (``categories[0] == "-"``)."""
        return list(self._categories)

    def index(self, name: str) -> int:
        """Id of the concept called ``name``.

        Raises
        ------
        KeyError
            If there is no such concept; the message names the closest ones.
        """
        try:
            return self._index[name]
        except (KeyError, TypeError):
            close = difflib.get_close_matches(str(name), self._names, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise KeyError(f"unknown concept {name!r}{hint} (see toyworld.CONCEPTS.names)") from None

    def ids(self, category: str) -> list[int]:
        """Ids of all concepts of ``category`` (``object``, ``part``, ``material``, ``color``)."""
        if category not in CHANNELS:
            raise ValueError(f"unknown category {category!r}; expected one of {list(CHANNELS)}")
        return [i for i, c in enumerate(self._categories) if c == category]

    def __len__(self) -> int:
        return len(self._names)

    def __getitem__(self, concept_id: int) -> Concept:
        i = int(concept_id)
        if not 0 <= i < len(self._names):
            raise IndexError(f"concept id {concept_id} out of range 0..{len(self._names) - 1}")
        return Concept(i, self._names[i], self._categories[i])

    def __iter__(self) -> Iterator[Concept]:
        return (Concept(i, n, c) for i, (n, c) in enumerate(zip(self._names, self._categories)))

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __repr__(self) -> str:
        counts = ", ".join(f"{len(self.ids(c))} {c}" for c in CHANNELS)
        return f"ConceptSet({len(self)} concepts: {counts}, plus '-')"


#: All concepts of the toy world (id 0 = "-", then objects, parts, materials, colours).
CONCEPTS = ConceptSet(
    [("-", "-")]
    + [(n, "object") for n in OBJECTS]
    + [(n, "part") for n in PARTS]
    + [(n, "material") for n in MATERIALS]
    + [(n, "color") for n in COLORS]
)

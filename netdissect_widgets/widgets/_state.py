"""What the user chose, as plain objects: the unit browser's view and the ablation panel's unit set.

The widgets are thin views over these: they forward clicks and trait changes
here and draw what these say. Everything here is plain Python (no widgets, no
torch), so it is tested directly, without a browser or a kernel.

* :class:`BrowserView` -- which units the unit browser shows: sort key, filters
  (category, concept text, minimum IoU), page size and page.
* :class:`UnitSet` -- the ablated units of a layer, with concept groups and the
  remove/keep top-k of a ranking.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BrowserView", "UnitSet", "SORT_KEYS", "ALL"]

SORT_KEYS = ("unit", "iou", "concept", "category")
ALL = "all"


@dataclass
class BrowserView:
    """The unit browser's filter/sort/page state over a list of unit labels.

    ``labels[u]`` has ``concept``, ``category`` and ``iou`` (a ``UnitLabel``).
    Changing a filter or the sort order goes back to page 0.
    """

    labels: Sequence[Any]
    sort_by: str = "unit"
    category: str = ALL
    concept_filter: str = ""
    min_iou: float = 0.0
    page_size: int = 24
    page: int = 0
    order: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.refilter()

    @property
    def categories(self) -> list[str]:
        """The categories of the labels, sorted."""
        return sorted({str(lab.category) for lab in self.labels})

    @property
    def num_pages(self) -> int:
        """Pages of the filtered units (at least 1, even when none passes)."""
        return max(1, math.ceil(len(self.order) / max(self.page_size, 1)))

    @property
    def page_units(self) -> list[int]:
        """Units on the current page."""
        start = self.page * self.page_size
        return self.order[start:start + self.page_size]

    def update(self, **changes: Any) -> None:
        """Set any of ``sort_by, category, concept_filter, min_iou, page_size`` and refilter (page 0)."""
        for name, value in changes.items():
            if name not in ("sort_by", "category", "concept_filter", "min_iou", "page_size"):
                raise AttributeError(f"BrowserView has no filter {name!r}")
            setattr(self, name, value)
        self.refilter()

    def go(self, page: int) -> None:
        """Go to ``page``, clipped to the pages there are."""
        self.page = min(max(int(page), 0), self.num_pages - 1)

    def refilter(self) -> None:
        """Recompute :attr:`order` from the filters and the sort key; back to page 0."""
        if self.sort_by not in SORT_KEYS:
            raise ValueError(f"sort_by must be one of {SORT_KEYS}, got {self.sort_by!r}")
        text = self.concept_filter.strip().lower()
        labels = self.labels
        units = [
            u for u, lab in enumerate(labels)
            if (self.category == ALL or str(lab.category) == self.category)
            and (not text or text in str(lab.concept).lower())
            and float(lab.iou) >= self.min_iou
        ]
        if self.sort_by == "iou":
            units.sort(key=lambda u: (-float(labels[u].iou), u))
        elif self.sort_by == "concept":
            units.sort(key=lambda u: (str(labels[u].concept).lower(), -float(labels[u].iou), u))
        elif self.sort_by == "category":
            units.sort(key=lambda u: (str(labels[u].category), -float(labels[u].iou), u))
        self.order = units
        self.page = 0

    def describe(self) -> str:
        """A sentence for an empty result: which filters hide every unit."""
        parts = []
        if self.category != ALL:
            parts.append(f"category {self.category!r}")
        if self.concept_filter.strip():
            parts.append(f"concept containing {self.concept_filter.strip()!r}")
        if self.min_iou > 0:
            parts.append(f"IoU at least {self.min_iou:.3f}")
        return " and ".join(parts) if parts else "no filter"


class UnitSet:
    """The ablated units of a layer of ``num_units`` units (0-based), sorted, without repeats.

    Parameters
    ----------
    num_units : int
    groups : dict of str to list of int, optional
        Named groups of units (e.g. a concept's units), for :meth:`toggle_group`.
    """

    def __init__(self, num_units: int, groups: dict[str, list[int]] | None = None) -> None:
        self.num_units = int(num_units)
        self.groups = {name: sorted(int(u) for u in units) for name, units in (groups or {}).items()}
        self.units: list[int] = []

    def check(self, units: Iterable[Any]) -> list[int]:
        """``units`` sorted and unique; ``ValueError`` naming the ones out of range."""
        chosen = sorted({int(u) for u in units})
        bad = [u for u in chosen if not 0 <= u < self.num_units]
        if bad:
            raise ValueError(f"units must be in 0..{self.num_units - 1} (0-based), got {bad}")
        return chosen

    def set(self, units: Iterable[Any]) -> list[int]:
        """Ablate exactly ``units``; returns the new set."""
        self.units = self.check(units)
        return self.units

    def toggle(self, unit: int) -> list[int]:
        """Ablate ``unit`` if it is not, restore it if it is."""
        current = set(self.units)
        current ^= {int(unit)}
        return self.set(current)

    def add(self, units: Iterable[int]) -> list[int]:
        return self.set(set(self.units) | set(self.check(units)))

    def remove(self, units: Iterable[int]) -> list[int]:
        return self.set(set(self.units) - set(self.check(units)))

    def group_is_on(self, name: str) -> bool:
        """Whether every unit of group ``name`` is ablated."""
        members = self.groups[name]
        return bool(members) and set(members) <= set(self.units)

    def toggle_group(self, name: str) -> list[int]:
        """Ablate all of group ``name``'s units, or restore them when all are already ablated."""
        if name not in self.groups:
            raise KeyError(f"no unit group {name!r}; groups: {', '.join(self.groups) or 'none'}")
        return self.remove(self.groups[name]) if self.group_is_on(name) else self.add(self.groups[name])

    def top_k(self, ranking: Sequence[int], k: int) -> list[int]:
        """Ablate the first ``k`` units of ``ranking`` (and nothing else)."""
        return self.set(list(ranking)[: int(k)])

    def keep_top_k(self, ranking: Sequence[int], k: int) -> list[int]:
        """Ablate every unit except the first ``k`` of ``ranking``."""
        keep = set(int(u) for u in list(ranking)[: int(k)])
        return self.set(u for u in range(self.num_units) if u not in keep)

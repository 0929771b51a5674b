"""UnitGrid: a compact on/off selector for the units of a layer (an anywidget ES module).

One widget model for the whole layer, whatever its size: ``units`` (one entry per
unit: number, group, tooltip) and ``ablated`` (the sorted list of units that are
on = ablated) are its two synced traits. The view (``unit_grid.js``,
``unit_grid.css``) draws one small button per unit, grouped (e.g. by concept),
and a click toggles a unit in ``ablated``. An ablated unit is solid red with
white struck-through text (class ``ndw-on``, ``aria-pressed="true"``), the same
in light and dark themes; the others follow the theme.

CSS classes: ``ndw-unit-selector`` (the view), ``ndw-grid-group``,
``ndw-grid-head`` (a group's "name: n/m ablated"), ``ndw-unit-cell`` (a unit's
button, ``data-unit`` = its number), ``ndw-on`` (ablated).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import anywidget
from traitlets import Dict, Int, List, TraitError, validate

__all__ = ["UnitGrid"]

_HERE = Path(__file__).parent


class UnitGrid(anywidget.AnyWidget):
    """On/off buttons for ``num_units`` units in named groups; ``ablated`` is the list of units that are on.

    Parameters
    ----------
    groups : list of (str, list of int)
        Group names and their units, in display order; every unit once.
    tips : dict of int to str, optional
        Tooltip per unit (default ``"unit U (0-based)"``).
    """

    _esm = _HERE / "unit_grid.js"
    _css = _HERE / "unit_grid.css"
    units = List(Dict(), help="one {unit, group, tip} per unit, in display order").tag(sync=True)
    ablated = List(Int(), help="units that are on (ablated), 0-based, sorted").tag(sync=True)

    def __init__(self, groups: list[tuple[str, list[int]]], tips: dict[int, str] | None = None,
                 **kwargs: Any) -> None:
        tips = tips or {}
        entries = [{"unit": int(u), "group": str(name), "tip": tips.get(int(u), f"unit {int(u)} (0-based)")}
                   for name, members in groups for u in members]
        numbers = [e["unit"] for e in entries]
        if len(set(numbers)) != len(numbers):
            raise ValueError("UnitGrid: a unit appears in two groups")
        self._known = set(numbers)
        super().__init__(units=entries, **kwargs)

    @validate("ablated")
    def _valid_ablated(self, proposal: dict) -> list[int]:
        units = sorted({int(u) for u in proposal["value"]})
        unknown = [u for u in units if u not in self._known]
        if unknown:
            raise TraitError(f"ablated: units {unknown} are not in this grid")
        return units

"""Dispatch ``python -m netdissect_widgets.bench NAME [args]`` to ``bench/NAME.py``'s ``main``."""
from __future__ import annotations

import ast
import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    folder = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(folder)]) if not m.name.startswith("_"))


def summary(name: str) -> str:
    """The first line of benchmark ``name``'s module docstring, read without importing it."""
    source = (Path(__file__).parent / f"{name}.py").read_text(encoding="utf-8")
    doc = ast.get_docstring(ast.parse(source)) or ""
    line = doc.strip().splitlines()[0] if doc.strip() else ""
    return line.split(": ``python -m")[0].split(" ``python -m")[0].replace("``", "").rstrip(" :.")


def usage(names: list[str]) -> str:
    """What ``bench --help`` prints: the usage line and one line per benchmark."""
    width = max(len(n) for n in names)
    lines = ["usage: python -m netdissect_widgets bench NAME [--json] [options]", "",
             "Benchmarks print their figures (measured side by side; see each one's --help):"]
    lines += [f"  {n:<{width}}  {summary(n)}" for n in names]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(names))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in names:
        print(f"unknown benchmark {name!r}; choose one of: {', '.join(names)}", file=sys.stderr)
        return 2
    return int(importlib.import_module(f"netdissect_widgets.bench.{name}").main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())

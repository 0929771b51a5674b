"""Benchmarks that print their figures: ``python -m netdissect_widgets.bench NAME [--json]``.

Each benchmark module ``bench/NAME.py`` has ``main(argv) -> int``. Speed targets are
reported as ratios measured side by side in one run, because these machines are noisy.
"""

"""Report: classification metrics, plots and ``report.md`` of an artifact.

Heavy side only through matplotlib (plots). May import the shared modules.
"""

"""``python -m metalearn.report readme``: copy the headline of results/summary.md into README.md
(:func:`metalearn.report.readme.main`)."""

from metalearn.report.readme import main

if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m metalearn.efficiency point|summary``: the child side of a measurement point (how
:func:`~metalearn.efficiency.time_memory.run_point` starts it), or rebuild a stage folder's
``summary.md`` (:func:`metalearn.efficiency.stage.main`)."""

from metalearn.efficiency.stage import main

if __name__ == "__main__":
    raise SystemExit(main())

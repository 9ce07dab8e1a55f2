"""The DVC stages: one module each (``run`` and its :class:`~metalearn.stages.cli.Stage`), and
:mod:`metalearn.stages.cli`, the command line the scripts in ``pipeline/`` share."""

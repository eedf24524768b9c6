"""The stages of a run: one module per stage, each declaring a
:class:`~text2emoji.stages.base.Stage` record; :mod:`.registry` lists them in run order.
:mod:`.base` holds the record type, :func:`~text2emoji.stages.base.execute` and
:func:`~text2emoji.stages.base.artifact` (where each artifact of a run lives)."""

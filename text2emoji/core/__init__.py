"""The ground floor every layer may import: typed configs (:mod:`.config`), the user-error type
(:mod:`.errors`), atomic result files (:mod:`.files`), run directories with provenance
(:mod:`.runs`) and the Opinion QA row and trait schema (:mod:`.schema`).

It imports nothing from :mod:`interp`, :mod:`finetune` or the rest of :mod:`text2emoji`.
"""

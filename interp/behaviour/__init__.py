"""Behavioural evaluation: generated answers (:mod:`.generation`, :mod:`.evaluate`), emoji
metrics with intervals (:mod:`.emoji_metrics`), trait alignment (:mod:`.alignment`) and
in-context explainability (:mod:`.icl`)."""

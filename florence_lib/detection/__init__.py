"""The Dynamic Head adapter (paper §2.4, §3.6): object detection and zero-shot detection on CoSwin.

- :mod:`.config` the ``detect`` command's typed config; :mod:`.data` world / COCO / merged boxes, multi-scale
  batches; :mod:`.train` training on the one engine, checkpoints, evaluation; :mod:`.postprocess` ATSS inference;
  :mod:`.coco_eval` COCOeval metrics and results JSON; :mod:`.zero_shot` text-classified proposals;
  :mod:`.tables` Tables 6 and 7; :mod:`.command` ``python -m florence_lib detect``.
- The model is :mod:`florence_lib.models.dyhead`, the targets and losses :mod:`florence_lib.losses.detection`.
"""

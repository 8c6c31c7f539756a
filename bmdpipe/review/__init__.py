"""Review step: open a processed series in napari, correct its ROIs, re-measure, keep an audit trail.

- :mod:`.model`: the edited label maps and their rows; plain Python, no Qt.
- :mod:`.io`: open a series from a run's outputs, save a review (maps, database, CSVs).
- :mod:`.cli`: ``bmdpipe review`` and ``bmdpipe measure``.
- :mod:`._qt`: the napari widget (needs the ``review`` extra); ``napari.yaml`` is the npe2
  manifest that registers it with napari.
"""

"""Interactive explorers for the notebooks (ipywidgets), their logic testable without a browser.

- ``zero_shot``: type class names and templates, see the top predictions on a grid of images (notebook 03).
- ``retrieval``: type a caption, see the top images; pick an image, see its top captions (notebook 07).
- ``curation``: browse what curation dropped, by reason, and the near-duplicate clusters (notebook 01).

Each module has pure functions (what is shown) and a small class whose ``widget()`` lays them out; its
``show()`` renders the current state once, so a notebook executed without a live frontend (nbval, papermill)
still gets the output.
"""

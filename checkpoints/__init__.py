"""Bundled checkpoints (``bundled:<stem>`` in recipes), each with its ``.sha256``.

A regular package (this file) rather than a bare directory: installed as
``codesign.checkpoints`` (pyproject's package-dir), and setuptools' editable finder maps only
packages with an ``__init__.py``. Read through ``codesign.resources``.
"""

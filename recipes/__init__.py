"""Bundled recipes: runs here, datapaths in hardware/, energy tables in energy/ (TOML only).

A regular package (this file) rather than a bare directory: installed as ``codesign.recipes``
(pyproject's package-dir), and setuptools' editable finder maps only packages with an
``__init__.py``, so without it ``pip install -e .`` could not import ``codesign.recipes``.
Read through ``codesign.resources``.
"""

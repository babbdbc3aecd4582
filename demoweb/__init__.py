"""The demo web: an offline image-search site over a folder of face photos, for demos, tests and benchmarks.

Not part of the scraper (which drives it like any engine, through a real browser): the
site lives here with its image synthesiser. `site` serves the search pages, result
lists and images, and says what every result really is (`truth`); `scenes` renders the
harder variants (faces in scenes, pairs, face-free images, re-encodes, thumbnails).
``python -m facescale.demoweb`` and ``facescale demo-web`` run it in the foreground;
`DemoWeb` runs it in a subprocess.
"""

from .site import HOSTILE_EXPECTED, TROUBLE_KINDS, DemoWeb, build_app, serve, truth

__all__ = ["HOSTILE_EXPECTED", "TROUBLE_KINDS", "DemoWeb", "build_app", "serve", "truth"]

"""``python -m facescale.demoweb --photos DIR``: the demo web in the foreground."""

from .site import main

main()

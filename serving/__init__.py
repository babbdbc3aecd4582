"""Serving: identify and verify faces through the CLI, an HTTP API and a web page."""

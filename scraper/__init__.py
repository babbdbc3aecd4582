"""Scraper: search-engine adapters, a Selenium browser pool and an HTTP downloader writing RAW runs."""

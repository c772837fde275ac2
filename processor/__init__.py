"""Listing-image processor: classify marketplace photos as they stream in."""

__version__ = "0.1.0"

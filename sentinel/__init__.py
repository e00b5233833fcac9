"""Sentinel: early-warning alerting for customer-service complaint streams.

The public API is the command line (`sentinel --help`), the configuration format and the HTTP API;
modules inside the package are internal and free to change.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]

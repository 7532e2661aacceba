"""The package version, in a module that imports nothing (so `audit --help` stays fast)."""

__version__ = "0.1.0"

"""hotload: hot code upgrades for live Smalltalk web applications."""

__version__ = "0.1.0"

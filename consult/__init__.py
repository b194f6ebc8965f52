"""consult: expert opinions on medical images between hospitals."""

__version__ = "0.1.0"

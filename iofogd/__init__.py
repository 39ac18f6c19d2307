"""iofogd: a lean re-implementation of the Eclipse ioFog Agent."""
__version__ = "3.1.0"

"""zchat: real-time chat on ZeroMQ."""

__version__ = "0.1.0"

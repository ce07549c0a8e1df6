"""The parser moved to grip_eventstream.sseclient (the test kit ships it)."""

from grip_eventstream.sseclient import Event, SSEParser

__all__ = ["Event", "SSEParser"]

"""Signals sent by grip_eventstream.

Connect receivers as to any Django signal, e.g. in an ``AppConfig.ready()``::

    from grip_eventstream.signals import presence_joined

    def greet(sender, channel, user_pk, **kwargs):
        ...

    presence_joined.connect(greet)

Both are sent by the process that records the change (the stream view, or any process whose
read or sweep finds expired streams), after the change is committed, once per change
whatever the number of processes. A receiver that raises is logged (logger
``grip_eventstream``) and does not affect the stream or the other receivers.
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = ["presence_joined", "presence_left"]

presence_joined = Signal()
"""A member joined a presence channel: a logged-in user's first open stream on it, or any
anonymous stream (each anonymous stream is a member of its own).

Keyword arguments: ``channel`` (str); ``user_pk`` (``str(pk)`` of the user, None for an
anonymous stream); ``streams`` and ``users``, the channel's open streams and distinct
logged-in users after the join. The sender is :class:`grip_eventstream.presence.Presence`.
"""

presence_left = Signal()
"""A member left a presence channel: a logged-in user's last open stream on it closed, or
an anonymous stream closed.

Keyword arguments as :data:`presence_joined`, the counts being those after the leave, and
``expired`` (bool): True when the stream was not closed by a gone notice but expired (its
proxy sends no gone notices, or stopped without sending them).
"""

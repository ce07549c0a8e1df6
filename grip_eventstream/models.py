from __future__ import annotations

from django.db import models
from django.utils import timezone


class Event(models.Model):
    """A stored event. ``seq`` numbers the events of one channel: 1, 2, 3, ... no gaps."""

    channel = models.CharField(max_length=255)
    seq = models.BigIntegerField()
    event_type = models.CharField(max_length=255)
    data = models.TextField()
    created = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [  # noqa: RUF012 (Django reads this list; nothing mutates it)
            # Also the index behind "events of channel C after N" (replay) and trimming.
            models.UniqueConstraint(fields=["channel", "seq"], name="grip_es_event_channel_seq"),
        ]

    def __str__(self) -> str:
        return f"{self.channel}#{self.seq} {self.event_type}"


class ChannelCounter(models.Model):
    """The last sequence number given out per channel; its row lock orders the writers.

    One row is not a channel: ``channel=""`` (a name no channel can have) holds the epoch
    of these tables, so that one query reads the epoch with the channels' last numbers.
    The epoch is a random value that changes whenever the tables start afresh: cursors
    carry it, so a cursor from an earlier (or another) database is recognised and answered
    with a ``stream-reset`` instead of being trusted.
    """

    channel = models.CharField(max_length=255, primary_key=True)
    last_seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.channel}@{self.last_seq}"


class UsedPageLink(models.Model):
    """A page link of a paged replay that has been fetched: each may be fetched once.

    Pushpin fetches a page link at once, with no channel held (so no Grip-Last proves the
    request is Pushpin's), and its URL then stands in the app server's access log: recording
    each use makes a copied page link worth nothing. Rows are deleted once their token has
    expired anyway.
    """

    nonce = models.CharField(max_length=32, primary_key=True)
    expires = models.BigIntegerField(db_index=True)  # Unix time

    def __str__(self) -> str:
        return self.nonce


# --- presence (grip_eventstream.presence) ---------------------------------------------------


class PresenceStream(models.Model):
    """One open stream on one presence channel: a row per (stream, channel).

    ``stream_id`` is the random id the view gives a subscribe; the proxy's gone notice and
    next-link fetches name it. ``user_pk`` is ``str(pk)`` of the stream's user, NULL for an
    anonymous stream. ``exact``: the proxy sends gone notices, so the row is deleted when the
    client disconnects; otherwise (and for a proxy that dies without sending them) only its
    ``expires`` ends it, which each next-link fetch pushes back. Rows past ``expires`` are
    never counted and are deleted by the sweep, which fires their leaves.
    """

    stream_id = models.CharField(max_length=64)
    channel = models.CharField(max_length=255)
    # NULL, not "", for anonymous streams: COUNT(DISTINCT user_pk) counts logged-in users.
    user_pk = models.CharField(max_length=255, null=True)  # noqa: DJ001
    exact = models.BooleanField()
    created = models.DateTimeField()
    expires = models.DateTimeField(db_index=True)  # the sweep's range read, across channels

    class Meta:
        constraints = [  # noqa: RUF012 (Django reads this list; nothing mutates it)
            # Also the index behind a gone notice and a refresh (WHERE stream_id = %s).
            models.UniqueConstraint(
                fields=["stream_id", "channel"], name="grip_es_presence_stream_channel"
            ),
        ]
        indexes = [  # noqa: RUF012
            # The reads: a channel's rows that have not expired.
            models.Index(fields=["channel", "expires"], name="grip_es_presence_live"),
        ]

    def __str__(self) -> str:
        return f"{self.stream_id} on {self.channel}"


class PresenceMember(models.Model):
    """How many streams a logged-in user has open on a presence channel.

    Every change goes through an upsert of this row, whose lock orders concurrent
    subscribes and disconnects of one user: the one that takes it from 0 to 1 is the join,
    the one that takes it to 0 the leave, exactly once. Deleted at 0. Anonymous streams have
    no row: each is a member of its own.
    """

    channel = models.CharField(max_length=255)
    user_pk = models.CharField(max_length=255)
    streams = models.BigIntegerField()

    class Meta:
        constraints = [  # noqa: RUF012
            models.UniqueConstraint(fields=["channel", "user_pk"], name="grip_es_presence_member"),
        ]

    def __str__(self) -> str:
        return f"{self.user_pk} on {self.channel}: {self.streams}"


class PresenceChannel(models.Model):
    """The streams and distinct logged-in users of a presence channel, for join/leave notices.

    Updated with every change of the channel's presence, so its lock orders them: the
    counts each join and leave reports follow one another, as the events do. Reads count
    ``PresenceStream`` rows instead (these counts include expired streams until the sweep).
    """

    channel = models.CharField(max_length=255, primary_key=True)
    streams = models.BigIntegerField()
    users = models.BigIntegerField()

    def __str__(self) -> str:
        return f"{self.channel}: {self.streams} streams, {self.users} users"

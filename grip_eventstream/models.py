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

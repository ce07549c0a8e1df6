from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from grip_eventstream.eventstream import send_events
from grip_eventstream.exceptions import PublishError


class Command(BaseCommand):
    help = "Send an event to a channel (from cron, a deploy script, or a shell)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("channel")
        parser.add_argument("event_type")
        parser.add_argument("data", help='JSON data, e.g. \'{"text": "hi"}\'')
        parser.add_argument(
            "--count",
            type=int,
            default=1,
            help="send it N times (N >= 1), with data['i'] = 0..N-1; all or none are stored",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        count = options["count"]
        if count < 1:
            raise CommandError(f"--count must be 1 or more, got {count}")
        try:
            data = json.loads(options["data"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"data is not valid JSON: {exc}") from exc
        channel, event_type = options["channel"], options["event_type"]
        events = [
            (
                channel,
                event_type,
                {**data, "i": i} if count > 1 and isinstance(data, dict) else data,
            )
            for i in range(count)
        ]
        try:
            # One batch: when an event is refused or the database fails, none is stored,
            # and the command can be run again as it was.
            send_events(events)
        except (PublishError, ValueError, TypeError, ImproperlyConfigured) as exc:
            raise CommandError(str(exc)) from exc
        except DatabaseError as exc:
            raise CommandError(
                f"nothing was sent: the event(s) could not be stored ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:300]}). Check that the database server is "
                "running and that DATABASES points at it."
            ) from exc
        self.stdout.write(f"sent {count} event(s) to {channel!r}")

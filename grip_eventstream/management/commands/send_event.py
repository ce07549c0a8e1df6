from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from grip_eventstream.eventstream import send_event
from grip_eventstream.exceptions import PublishError


class Command(BaseCommand):
    help = "Send an event to a channel (from cron, a deploy script, or a shell)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("channel")
        parser.add_argument("event_type")
        parser.add_argument("data", help='JSON data, e.g. \'{"text": "hi"}\'')
        parser.add_argument(
            "--count", type=int, default=1, help="send it N times, with data['i'] = 0..N-1"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            data = json.loads(options["data"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"data is not valid JSON: {exc}") from exc
        count = options["count"]
        try:
            for i in range(count):
                payload = {**data, "i": i} if count > 1 and isinstance(data, dict) else data
                send_event(options["channel"], options["event_type"], payload)
        except (PublishError, ValueError, TypeError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"sent {count} event(s) to {options['channel']!r}")

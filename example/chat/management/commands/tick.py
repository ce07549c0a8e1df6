"""Send N chat messages from a separate process: `python manage.py tick --count 5`."""

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from grip_eventstream import send_event

from ... import CHANNEL


class Command(BaseCommand):
    help = "Send COUNT 'message' events to the chat channel, one every INTERVAL seconds."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, default=5, help="how many messages (default 5)")
        parser.add_argument(
            "--interval", type=float, default=1.0, help="seconds between messages (default 1)"
        )
        parser.add_argument("--text", default="tick", help="message text (default 'tick')")

    def handle(self, *args: Any, count: int, interval: float, text: str, **options: Any) -> None:
        for number in range(1, count + 1):
            send_event(
                CHANNEL, "message", {"text": f"{text} {number}/{count}", "at": timezone.now()}
            )
            self.stdout.write(f"sent {text} {number}/{count}")
            if number < count:
                time.sleep(interval)

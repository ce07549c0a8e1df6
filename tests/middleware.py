"""Test-only: make the first requests of a key fail with 500, as Pushpin does while starting.

``?fail=KEY&failures=N``: the first N requests carrying KEY answer 500 (counted in a file,
since gunicorn runs several worker processes).
"""

import fcntl
import os
from pathlib import Path

from django.conf import settings
from django.http import HttpResponse


class FlakyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        key = request.GET.get("fail")
        if key and key.isalnum():
            counter = Path(settings.RUN_DIR) / f"fail-{key}"
            with open(counter, "a+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                handle.seek(0)
                seen = len(handle.read())
                handle.write("x")
            if seen < int(request.GET.get("failures", "2")):
                return HttpResponse("Accept service unavailable.\n", status=500)
        return self.get_response(request)


def reset(key: str) -> None:
    path = Path(settings.RUN_DIR) / f"fail-{key}"
    if path.exists():
        os.unlink(path)

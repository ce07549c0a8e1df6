from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_POST

from grip_eventstream import send_event

from . import CHANNEL

MAX_LENGTH = 500


@require_GET
@ensure_csrf_cookie  # the page's script reads the csrftoken cookie to POST messages
def index(request: HttpRequest) -> HttpResponse:
    return render(request, "chat/index.html", {"max_length": MAX_LENGTH})


@require_POST
def send(request: HttpRequest) -> HttpResponse:
    """Publish one chat message to everyone on the page; answers 204 (or 400 with a reason)."""
    text = request.POST.get("text", "").strip()
    if not text:
        return JsonResponse({"error": "Type a message first."}, status=400)
    if len(text) > MAX_LENGTH:
        return JsonResponse({"error": f"At most {MAX_LENGTH} characters."}, status=400)
    # The data may hold a datetime: the library encodes it with DjangoJSONEncoder (ISO 8601).
    send_event(CHANNEL, "message", {"text": text, "at": timezone.now()})
    # 204 also suits a plain form post without JavaScript: the browser stays on the page.
    return HttpResponse(status=204)

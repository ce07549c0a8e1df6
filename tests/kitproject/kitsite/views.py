from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from grip_eventstream import send_event


@csrf_exempt
@require_POST
def post_comment(request: HttpRequest) -> HttpResponse:
    text = request.POST["text"]
    send_event("comments", "comment", {"text": text})
    if request.user.is_authenticated:
        send_event(f"inbox-{request.user.pk}", "message", {"echo": text})
    return HttpResponse(status=204)

import json

from django.contrib.auth import get_user_model, login
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

from grip_eventstream import send_event


def page(request):
    return render(request, "dropin/page.html", {"channel": request.GET["channel"]})


@csrf_exempt
def send(request):
    """POST {"channel", "data", "skip"}: send_event as django-eventstream's README shows it."""
    body = json.loads(request.body)
    send_event(
        body["channel"],
        "message",
        body["data"],
        skip_user_ids=body.get("skip"),
        async_publish=body.get("async", True),
    )
    return JsonResponse({"ok": True})


@csrf_exempt
def login_view(request):
    user, _ = get_user_model().objects.get_or_create(username=request.GET["username"])
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return HttpResponse(str(user.pk))

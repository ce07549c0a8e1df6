"""Views the end-to-end tests call on the gunicorn server."""

import json
from urllib.parse import urlencode

from django.contrib.auth import get_user_model, login
from django.contrib.auth.models import Group
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

from grip_eventstream import send_event


@csrf_exempt
def send(request):
    """POST {"channel", "type", "data", "count"}: send_event from a gunicorn worker."""
    body = json.loads(request.body)
    for i in range(body.get("count", 1)):
        data = body["data"] if "count" not in body else {**body["data"], "i": i}
        send_event(body["channel"], body.get("type", "message"), data)
    return JsonResponse({"sent": body.get("count", 1)})


@csrf_exempt
def login_view(request):
    user, _ = get_user_model().objects.get_or_create(username=request.GET["username"])
    for name in filter(None, request.GET.get("groups", "").split(",")):
        user.groups.add(Group.objects.get_or_create(name=name)[0])
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return HttpResponse("ok")


def page(request):
    """A page with an EventSource on ?channel=, for the headless Chromium tests."""
    channel = request.GET["channel"]
    stream_url = "/stream/?" + urlencode({"channel": channel})
    return render(request, "page.html", {"channel": channel, "stream_url": stream_url})

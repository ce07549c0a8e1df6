"""Views the end-to-end tests call on the gunicorn server."""

import json
from pathlib import Path
from urllib.parse import urlencode

from django.contrib.auth import get_user_model, login
from django.contrib.auth.models import Group
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

import grip_eventstream
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


CLIENT_JS = Path(grip_eventstream.__file__).parent / "static/grip_eventstream/eventsource.js"


def page(request):
    """A page with an EventSource on ?channel=, for the headless Chromium tests."""
    channel = request.GET["channel"]
    query = {"channel": channel}
    if "failkey" in request.GET:  # the stream fails at first: tests.middleware.FlakyMiddleware
        query.update(fail=request.GET["failkey"], failures=request.GET.get("failures", "2"))
    stream_url = "/stream/?" + urlencode(query)
    context = {"channel": channel, "stream_url": stream_url}
    if request.GET.get("client") == "grip":  # the library's reconnecting client
        context["client_js"] = CLIENT_JS.read_text()
    return render(request, "page.html", context)


NPM_MODULES = Path(__file__).resolve().parent.parent / ".run" / "npm" / "node_modules"
HTMX = {
    "2": ["htmx2/dist/htmx.min.js", "htmx-ext-sse/dist/sse.js"],
    "4": ["htmx4/dist/htmx.min.js", "htmx4/dist/ext/hx-sse.js"],
}


def npm_file(request, path):
    """Files of the npm packages the tests installed (tests.conftest.npm_packages)."""
    file = (NPM_MODULES / path).resolve()
    if not file.is_relative_to(NPM_MODULES) or not file.is_file():
        raise Http404(path)
    return FileResponse(file.open("rb"), content_type="text/javascript")


def htmx_page(request):
    """An htmx page whose list is filled by SSE: ?version=2 (htmx-ext-sse) or 4 (hx-sse)."""
    version = request.GET["version"]
    channel = request.GET["channel"]
    return render(
        request,
        "htmx.html",
        {"version": version, "channel": channel, "scripts": HTMX[version]},
    )


@csrf_exempt
def send_raw(request):
    """POST {"channel", "data", "type"}: send_event(..., json_encode=False) from a gunicorn
    worker, so the event goes to the database gunicorn uses (tests/test_e2e_outage.py)."""
    body = json.loads(request.body)
    send_event(body["channel"], body.get("type", "message"), body["data"], json_encode=False)
    return JsonResponse({"sent": 1})

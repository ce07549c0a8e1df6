import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
application = get_wsgi_application()

if os.environ.get("GES_PRESENCE_LOG"):  # tests/test_e2e_presence.py: record the signals
    from tests import presence_log

    presence_log.connect(os.environ["GES_PRESENCE_LOG"])

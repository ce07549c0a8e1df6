from django.apps import AppConfig
from django.core import checks
from django.core.signals import setting_changed


class GripEventstreamConfig(AppConfig):
    name = "grip_eventstream"
    verbose_name = "GRIP event stream"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .checks import check_settings
        from .registry import clear_caches

        checks.register(check_settings, "grip_eventstream")
        setting_changed.connect(clear_caches, dispatch_uid="grip_eventstream.clear_caches")

"""A project configured the way django-eventstream's README says, with only the module name
changed: its settings forms, GripMiddleware, both static scripts, send_event with
async_publish and skip_user_ids, a ChannelManagerBase subclass, the DRF router.

gunicorn serves it in tests/test_e2e_dropin.py; GES_GRIP_MIDDLEWARE=0 leaves out
django_grip.GripMiddleware, to show both forms work.
"""

"""``{% load grip_eventstream %}{% current_event_id "chat" "news" as cursor %}``."""

from __future__ import annotations

from django import template

from grip_eventstream.eventstream import get_current_event_id

register = template.Library()


@register.simple_tag
def current_event_id(*channels: str) -> str:
    """The cursor of ``channels`` now: pass it as ``?lastEventId=`` so nothing is missed
    between rendering the page and opening the stream."""
    return get_current_event_id(channels)

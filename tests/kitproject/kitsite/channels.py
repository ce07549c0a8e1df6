from django.contrib.auth.base_user import AbstractBaseUser

from grip_eventstream.channelmanager import DefaultChannelManager


class ChannelManager(DefaultChannelManager):
    """Anyone reads "comments"; "inbox-<id>" only its user."""

    def can_read_channel(self, user: AbstractBaseUser | None, channel: str) -> bool:
        if channel.startswith("inbox-"):
            return user is not None and channel == f"inbox-{user.pk}"
        return True

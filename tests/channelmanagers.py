from grip_eventstream.channelmanager import DefaultChannelManager


class TestChannelManager(DefaultChannelManager):
    """volatile-* channels are not stored; private-* need a logged-in user; members-NAME
    needs membership of the group NAME (so permissions can change while streams are open)."""

    def is_channel_reliable(self, channel):
        return not channel.startswith("volatile-")

    def can_read_channel(self, user, channel):
        if channel.startswith("private-"):
            return user is not None
        if channel.startswith("members-"):
            group = channel.removeprefix("members-")
            return user is not None and user.groups.filter(name=group).exists()
        return True

    def is_presence_channel(self, channel):
        return channel.startswith(("presence-", "volatile-presence-"))

    def get_presence_events(self, channel):
        return channel.startswith("presence-events-")

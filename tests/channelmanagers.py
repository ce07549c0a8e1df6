from grip_eventstream.channelmanager import DefaultChannelManager


class TestChannelManager(DefaultChannelManager):
    """Channels named volatile-* are not stored; private-* need a logged-in user."""

    def is_channel_reliable(self, channel):
        return not channel.startswith("volatile-")

    def can_read_channel(self, user, channel):
        if channel.startswith("private-"):
            return user is not None
        return True

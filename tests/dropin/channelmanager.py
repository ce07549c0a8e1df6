from grip_eventstream.channelmanager import ChannelManagerBase


class MyChannelManager(ChannelManagerBase):
    def get_channels_for_request(self, request, view_kwargs):
        if "channels" in view_kwargs:
            return set(view_kwargs["channels"])
        return set(request.GET.getlist("channel"))

    def can_read_channel(self, user, channel):
        if channel.startswith("_"):
            return user is not None and user.is_authenticated
        return True

    def is_channel_reliable(self, channel):
        return True

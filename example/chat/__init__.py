"""A one-page live chat showing grip_eventstream end to end."""

# The one channel the page subscribes to and every message is sent on.
CHANNEL = "chat"

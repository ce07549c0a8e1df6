pytest_plugins = ["grip_eventstream.testing"]

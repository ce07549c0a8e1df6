"""The epoch moves into the counters table (one query reads it with the channels' numbers).

Existing epochs are kept, so cursors that clients hold stay valid across the upgrade.
"""

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

EPOCH_ROW = ""


def forwards(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    from grip_eventstream.cursor import epoch_to_int, parse_cursor

    Epoch = apps.get_model("grip_eventstream", "Epoch")
    ChannelCounter = apps.get_model("grip_eventstream", "ChannelCounter")
    db = schema_editor.connection.alias
    value = Epoch.objects.using(db).filter(pk=1).values_list("value", flat=True).first()
    if value is None or parse_cursor(value) is None:
        return  # no epoch yet, or not one this library wrote: a new one is made on first use
    ChannelCounter.objects.using(db).update_or_create(
        channel=EPOCH_ROW, defaults={"last_seq": epoch_to_int(value)}
    )


def backwards(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    from grip_eventstream.cursor import epoch_from_int

    Epoch = apps.get_model("grip_eventstream", "Epoch")
    ChannelCounter = apps.get_model("grip_eventstream", "ChannelCounter")
    db = schema_editor.connection.alias
    row = ChannelCounter.objects.using(db).filter(channel=EPOCH_ROW).first()
    if row is not None:
        Epoch.objects.using(db).update_or_create(pk=1, defaults={"value": epoch_from_int(row.last_seq)})
        row.delete()


class Migration(migrations.Migration):
    dependencies = [("grip_eventstream", "0001_initial")]

    operations = [
        migrations.RunPython(forwards, backwards),
        migrations.DeleteModel(name="Epoch"),
    ]

"""What a run leaves for people: its run folder and checkpoints, the terminal table, the contact sheet,
and a sweep's summary."""

"""Running a scenario: its file format, the stacks it starts, and the phases it replays."""

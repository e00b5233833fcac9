"""Alert management: what happens between an alert event and the messages it becomes."""

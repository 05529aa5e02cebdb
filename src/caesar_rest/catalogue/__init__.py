"""The catalogue schema shared by every app, and its writers."""

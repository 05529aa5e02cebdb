"""Apps: the source finders and classifiers the service runs."""

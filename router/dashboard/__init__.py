"""In-process aggregates for the built-in dashboard, and its static page, script and style."""

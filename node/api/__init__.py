"""The public JSON API, metrics and (later) the dashboard."""

"""rotator: scheduled rotation of manual backups through a VPS provider's Backups API."""

__version__ = "0.1.0"

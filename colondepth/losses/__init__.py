"""losses subpackage."""

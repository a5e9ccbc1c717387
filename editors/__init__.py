"""invkit.editors: built-in editor plugins (registered through the `invkit` entry points)."""

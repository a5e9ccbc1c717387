"""invkit.adapters: built-in adapter plugins (registered through the `invkit` entry points)."""

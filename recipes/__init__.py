"""invkit.recipes: built-in recipe plugins (registered through the `invkit` entry points)."""

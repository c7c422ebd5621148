"""RecBole model classes of the plugin."""

"""Session bundles: a whole session in one zip file, and back."""

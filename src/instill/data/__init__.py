"""Data: registry -> formats -> Example -> templates + tokenize -> ids/labels -> collate."""

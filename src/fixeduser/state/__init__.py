"""What the plugin keeps: its SQLite store, container owners, volume records, the hand-off's claims."""

"""Building instruction data: convert, augment, generate, dedup, filter, mix, split, stats, check."""

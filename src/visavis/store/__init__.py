"""visavis.store."""

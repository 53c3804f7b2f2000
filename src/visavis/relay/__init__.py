"""visavis.relay."""

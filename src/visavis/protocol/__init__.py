"""visavis.protocol."""

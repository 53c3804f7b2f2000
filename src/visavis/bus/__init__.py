"""visavis.bus."""

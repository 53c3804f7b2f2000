"""visavis.client."""

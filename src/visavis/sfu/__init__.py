"""visavis.sfu."""

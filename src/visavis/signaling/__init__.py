"""visavis.signaling."""

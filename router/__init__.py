"""Tierwise: an OpenAI-compatible gateway that routes each request to the cheapest adequate model tier."""

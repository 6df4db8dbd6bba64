"""Prompt difficulty classifiers for Tierwise.

The gateway uses this package through one small interface:

    scorer = load_artifact(path)            # or load_default()
    scores = scorer.score(messages)         # {"edge": 0.83, "mid": 0.91, "frontier": 0.95}

``score`` returns, per tier name, the estimated probability that the tier's answer is
adequate for the conversation.  It takes OpenAI-style message dicts (``role``,
``content`` as a string, a list of content parts or None) and never raises on odd
content.  The package knows nothing of HTTP.
"""

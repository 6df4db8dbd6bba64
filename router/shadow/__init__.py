"""Shadow evaluation: labels for the classifier from production traffic, off by default.

For a sample of requests that a cheaper tier answered, the gateway asks the policy's
reference tier the same question in the background and has a judge deployment grade the
served answer against the reference answer.  The grade becomes a ``feedback`` record with
``"source": "shadow"`` in the outcome log, which classifier training joins to the request
like client feedback.

- :mod:`router.shadow.sampler`: picks requests and runs jobs, bounded and cancellable.
- :mod:`router.shadow.job`: one job, from cost estimate to label record.
- :mod:`router.shadow.judge`: the judge prompt and the verdict parser (pure).
- :mod:`router.shadow.budget`: the daily spend cap, atomic in Redis.
- :mod:`router.shadow.metrics`: the Prometheus counters.

Streamed requests are not eligible: the stream relay does not keep the assembled text.
"""

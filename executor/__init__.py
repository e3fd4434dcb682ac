"""Forcing thunks: the scheduler, the engines and ``gg-force``.

``executor.execution`` is the one execution core: the local engine and the Lambda
handler both run thunks through it.
"""

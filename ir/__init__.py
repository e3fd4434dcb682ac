"""The thunk IR: content IDs, canonical thunk serialization, placeholders and stores.

Everything above this package (the scheduler, the models, the Lambda handler) speaks
only in the terms defined here, so the package has no dependency on them.
"""

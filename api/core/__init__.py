"""The serving core: everything a prediction needs except HTTP."""

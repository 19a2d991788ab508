"""End-to-end recipes: the top room. A recipe strings the library's rooms together (data, train, eval,
serve, ablation) on a fixture such as the toy world; it may import every room, and nothing in the
library imports it (only jobs/ and tests do). quickstart: `python jobs/quickstart.py`'s steps.
"""

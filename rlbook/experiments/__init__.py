"""One module per chapter: the experiment's ``Config`` and the functions it runs.

Reusable pieces live in their own rlbook modules; these modules only compose them.
"""

"""Checks of a compiled miles command that run nothing: flags.py (the flag table of miles' parser,
milliseconds), oracle.py + oracle_child.py (miles' own ``parse_args()`` in a subprocess of a
Python that has miles), compare.py (mode=check: both, and the derived values against our plan).
"""

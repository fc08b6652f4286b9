"""Stand-in for the parts of python3-application that OpenXCAP's stand-in uses.

Test scaffolding, not python3-application's code: see ../README.md.
"""

"""Run-time patches of upstream tools (never edits to site-packages).

Each module names the upstream version range it targets, says why it exists, refuses versions it
was not checked against, and has a test that fails once upstream no longer needs it.
"""

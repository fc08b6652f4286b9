"""Stand-in for OpenXCAP 3.x's ``xcap`` package (test scaffolding; see ../README.md)."""

__project__ = "openxcap"
__fullname__ = "OpenXCAP"
__version__ = "3.2.0"
__description__ = "An open source XCAP server (test stand-in)"

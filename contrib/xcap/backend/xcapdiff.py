"""OpenXCAP backend ``XCAPDiff`` (``[Server] backend = XCAPDiff``).

Installed into OpenXCAP's ``xcap/backend/`` directory by the Debian package
openxcap-xcapdiff; it only re-exports the backend of the ``xcapdiff_ext`` package.
"""

from xcapdiff_ext.openxcap.backend import PasswordChecker, Storage, installSignalHandlers

__all__ = ["PasswordChecker", "Storage", "installSignalHandlers"]

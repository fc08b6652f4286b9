"""``application.process.process``: where configuration files are looked up.

Only the lookup is modelled: ``process.configuration.file(name)`` returns ``name`` in
``local_directory`` (set by ``openxcap --config-dir``) if it exists there, else in
``system_directory``, else None.  The stand-in starts ``local_directory`` from the
environment variable ``OPENXCAP_STANDIN_CONFIG_DIR`` (read when this module is imported).
"""

from __future__ import annotations

import os

__all__ = ["ProcessError", "process"]

CONFIG_DIR_ENV = "OPENXCAP_STANDIN_CONFIG_DIR"


class ProcessError(Exception):
    pass


class ProcessConfiguration:
    def __init__(self) -> None:
        self.local_directory: str | None = os.environ.get(CONFIG_DIR_ENV) or None
        self.system_directory: str = "/etc/openxcap"
        self.subdirectory: str | None = "openxcap"
        self.user_directory: str | None = None

    def file(self, name: str) -> str | None:
        """The full path of configuration file ``name``, or None when it is nowhere."""
        if os.path.isabs(name):
            return name if os.path.isfile(name) else None
        for directory in (self.local_directory, self.system_directory):
            if directory:
                path = os.path.realpath(os.path.join(directory, name))
                if os.path.isfile(path):
                    return path
        return None


class ProcessRuntime:
    def __init__(self) -> None:
        self.directory: str | None = None


class Process:
    def __init__(self) -> None:
        self.configuration = ProcessConfiguration()
        self.runtime = ProcessRuntime()


process = Process()

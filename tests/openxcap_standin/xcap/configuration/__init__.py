"""OpenXCAP's configuration sections, read from ``config.ini`` at import.

The values are class attributes; ``ServerConfig.backend`` here is the RAW string of
``[Server] backend`` (``xcap.appusage.ServerConfig.backend`` is the loaded module).
"""

from __future__ import annotations

from application.configuration import ConfigSection, ConfigSetting

from xcap.configuration.datatypes import XCAPRootURI

__all__ = [
    "AuthenticationConfig",
    "DatabaseConfig",
    "OpensipsConfig",
    "ServerConfig",
]


class AuthenticationConfig(ConfigSection):
    __cfgfile__ = "config.ini"
    __section__ = "Authentication"

    type = "digest"
    cleartext_passwords = False
    default_realm = ConfigSetting(type=str, value=None)


class ServerConfig(ConfigSection):
    __cfgfile__ = "config.ini"
    __section__ = "Server"

    address = ConfigSetting(type=str, value="0.0.0.0")
    port = ConfigSetting(type=int, value=80)
    root = ConfigSetting(type=XCAPRootURI, value=None)
    backend = ConfigSetting(type=str, value=None)
    allow_external_references = False
    tcp_port = ConfigSetting(type=int, value=35060)


class DatabaseConfig(ConfigSection):
    __cfgfile__ = "config.ini"
    __section__ = "Database"

    authentication_db_uri = ConfigSetting(type=str, value=None)
    storage_db_uri = ConfigSetting(type=str, value=None)
    subscriber_table = "subscriber"
    xcap_table = "xcap"


class OpensipsConfig(ConfigSection):
    __cfgfile__ = "config.ini"
    __section__ = "OpenSIPS"

    publish_xcapdiff = False
    outbound_sip_proxy = ""

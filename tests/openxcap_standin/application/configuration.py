"""``ConfigSection``/``ConfigSetting``: configuration classes read when they are created.

As with python3-application, a section class reads its ``__section__`` of
``__cfgfile__`` (found with ``process.configuration.file``) at the moment the class
statement runs, i.e. when the module defining it is imported.  A subclass reads the
file again, with its own setting types; assignments to a base class do not reach it.
Assigning a string to a typed setting converts it with the setting's type.
"""

from __future__ import annotations

import configparser
import logging
from typing import Any

from application.process import process

__all__ = ["ConfigSection", "ConfigSetting", "boolean"]

log = logging.getLogger("openxcap")

_TRUE = frozenset({"yes", "true", "on", "1"})
_FALSE = frozenset({"no", "false", "off", "0"})


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"invalid boolean value: {value!r}")


class ConfigSetting:
    """A setting with an explicit type (a callable converting the file's string)."""

    def __init__(self, type: Any, value: Any = None) -> None:
        self.type = type
        self.value = value


def _setting_for(value: Any) -> ConfigSetting:
    if isinstance(value, bool):
        return ConfigSetting(boolean, value)
    if isinstance(value, int | float):
        return ConfigSetting(type(value), value)
    return ConfigSetting(str, value)


class ConfigSectionType(type):
    def __init__(cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> None:
        super().__init__(name, bases, namespace)
        settings: dict[str, ConfigSetting] = {}
        for base in reversed(cls.__mro__[1:]):
            settings.update(base.__dict__.get("__settings__", {}))
        for key, value in namespace.items():
            if key.startswith("_") or callable(value):
                continue
            if isinstance(value, classmethod | staticmethod | property):
                continue
            settings[key] = value if isinstance(value, ConfigSetting) else _setting_for(value)
        type.__setattr__(cls, "__settings__", settings)
        for key, setting in settings.items():
            type.__setattr__(cls, key, setting.value)
        cls.read()

    def __setattr__(cls, name: str, value: Any) -> None:
        setting = cls.__dict__.get("__settings__", {}).get(name)
        if setting is not None and isinstance(value, str) and setting.type is not str:
            value = setting.type(value)
        super().__setattr__(name, value)

    def read(cls, cfgfile: str | None = None, section: str | None = None) -> None:
        cfgfile = cfgfile or getattr(cls, "__cfgfile__", None)
        section = section or getattr(cls, "__section__", None)
        if not cfgfile or not section:
            return
        path = process.configuration.file(cfgfile)
        if path is None:
            return
        parser = configparser.RawConfigParser(strict=False)
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error as err:
            log.error("cannot read %s: %s", path, err)
            return
        if not parser.has_section(section):
            return
        settings = cls.__dict__["__settings__"]
        for key, text in parser.items(section):
            setting = settings.get(key)
            if setting is None:
                continue
            try:
                value = setting.type(text)
            except Exception as err:
                log.error("ignoring invalid value for [%s] %s in %s: %s", section, key, path, err)
                continue
            type.__setattr__(cls, key, value)


class ConfigSection(metaclass=ConfigSectionType):
    __cfgfile__: str | None = None
    __section__: str | None = None

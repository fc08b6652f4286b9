"""Packaging for xcapdiff_ext (setuptools; Debian builds it with pybuild)."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="xcapdiff_ext",
    version="0.1.0",
    description=(
        "Publish RFC 5874 xcap-diff documents from OpenXCAP to OpenSIPS "
        "(MI pua_publish or SIP PUBLISH)"
    ),
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="GPL-3.0-or-later",
    packages=find_packages(include=["xcapdiff_ext", "xcapdiff_ext.*"]),
    package_data={"xcapdiff_ext": ["py.typed", "schemas/*.xsd"]},
    python_requires=">=3.11",
    install_requires=["twisted>=22.4", "lxml>=4.9.2"],
    # SIP over TLS (sip_proxy sips: or ;transport=tls) verifies with these.
    extras_require={"tls": ["pyopenssl>=22.0", "service_identity>=18.1"]},
    entry_points={"console_scripts": ["xcapdiff = xcapdiff_ext.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Twisted",
        "Topic :: Communications :: Internet Phone",
    ],
)

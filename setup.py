"""Packaging for xcapdiff_ext (setuptools; Debian builds it with pybuild)."""

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class build_py_with_pth(build_py):
    """Also put ``xcapdiff_ext.pth`` at the top of the installed tree: it installs
    the import hook that lets OpenXCAP load ``[Server] backend = XCAPDiff``."""

    def run(self):
        super().run()
        self.copy_file("xcapdiff_ext.pth", str(Path(self.build_lib) / "xcapdiff_ext.pth"))

    def get_outputs(self, include_bytecode=True):
        pth = str(Path(self.build_lib) / "xcapdiff_ext.pth")
        return [*super().get_outputs(include_bytecode), pth]


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
    py_modules=["_xcapdiff_ext_hook"],
    cmdclass={"build_py": build_py_with_pth},
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

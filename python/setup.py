"""The dpsgd Python package: `pip install ./python` (setuptools only; no download, no build
isolation, so it installs offline with Debian's python3-setuptools).

The C library is not built here (cmake builds it). At install time it is bundled into the package
(found at run time "next to the package") from DPSGD_LIBRARY if that is set, else from the build/
folder of the checkout this file sits in if it holds one; DPSGD_NO_BUNDLE=1 bundles nothing, and
the package then finds the library at run time through DPSGD_LIBRARY or the install prefix
(`cmake --install build`, then ldconfig). See docs/python.md.
"""

import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def library_to_bundle():
    if os.environ.get("DPSGD_NO_BUNDLE"):
        return None
    env = os.environ.get("DPSGD_LIBRARY")
    if env:
        if not os.path.isfile(env):
            raise SystemExit("setup.py: DPSGD_LIBRARY=%s: no such file" % env)
        return os.path.realpath(env)
    built = os.path.join(os.path.dirname(HERE), "build", "libdpsgd.so.0")
    return os.path.realpath(built) if os.path.isfile(built) else None


class BuildPy(build_py):
    def run(self):
        super().run()
        lib = library_to_bundle()
        if lib:
            dest = os.path.join(self.build_lib, "dpsgd", "libdpsgd.so.0")
            print("setup.py: bundling %s as dpsgd/libdpsgd.so.0" % lib)
            shutil.copyfile(lib, dest)
            os.chmod(dest, 0o755)
        else:
            print("setup.py: no library bundled; at run time dpsgd looks for DPSGD_LIBRARY or an installed "
                  "libdpsgd.so.0")


setup(
    name="dpsgd",
    version="0.1.0",
    description="Differentially private training (DP-SGD) and privacy accounting over the dpsgd C library",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    packages=["dpsgd"],
    python_requires=">=3.9",
    install_requires=["numpy"],
    cmdclass={"build_py": BuildPy},
    zip_safe=False,
)

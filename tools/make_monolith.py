"""Generate a project that holds what real monoliths hold in memory, for memory measurements.

``make_project.py`` makes start-up slow with CPU work and little memory; a real monolith's
session is big because of its libraries and data. This one's conftest configures Django (with
its admin, auth and sessions apps), maps 300 SQLAlchemy tables of 12 columns, imports numpy
and pandas, and offers two session fixtures: a 200,000-row DataFrame and an SQLite engine with
every table created. ``tests/test_m.py`` has a quick test and one that sleeps 1 s, for
``tools/soak.py`` to sample a running child.

Usage: python tools/make_monolith.py DEST
       pip install -r tools/monolith-requirements.txt   # into the venv that runs it
       python tools/soak.py --project DEST --case "-q tests/test_m.py::test_a" \\
           --memory-case "-q tests/test_m.py::test_sleep" --requests 10 --warmup 5 --burst 0
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

FILES = {
    "pyproject.toml": """
        [tool.pytest.ini_options]
        testpaths = ["tests"]
        pythonpath = ["."]
    """,
    "mono/__init__.py": "",
    "mono/models.py": '''
        """A monolith's data model: 300 SQLAlchemy tables of 12 columns."""
        from sqlalchemy import Column, DateTime, ForeignKey, Integer, String, Text
        from sqlalchemy.orm import DeclarativeBase, relationship


        class Base(DeclarativeBase):
            pass


        TABLES = {}
        for i in range(300):
            attrs = {"__tablename__": f"t{i}", "id": Column(Integer, primary_key=True)}
            for j in range(10):
                attrs[f"c{j}"] = Column(String(64) if j % 3 else Text, index=j == 1)
            attrs["created"] = Column(DateTime)
            if i:
                attrs["parent_id"] = Column(Integer, ForeignKey(f"t{i - 1}.id"))
                attrs["parent"] = relationship(f"T{i - 1}")
            TABLES[i] = type(f"T{i}", (Base,), attrs)
    ''',
    "tests/conftest.py": '''
        import django
        from django.conf import settings

        settings.configure(
            INSTALLED_APPS=[
                "django.contrib.auth", "django.contrib.contenttypes", "django.contrib.admin",
                "django.contrib.sessions", "django.contrib.messages",
            ],
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        )
        django.setup()

        import numpy as np
        import pandas as pd
        import pytest
        from sqlalchemy import create_engine
        from sqlalchemy.orm import configure_mappers

        from mono import models

        configure_mappers()


        @pytest.fixture(scope="session")
        def reference():
            """Reference data loaded once per session, as monoliths do."""
            rng = np.random.default_rng(0)
            return pd.DataFrame({"a": rng.random(200_000), "b": rng.integers(0, 100, 200_000)})


        @pytest.fixture(scope="session")
        def engine():
            engine = create_engine("sqlite://")
            models.Base.metadata.create_all(engine)
            return engine
    ''',
    "tests/test_m.py": """
        import time


        def test_a(reference, engine):
            assert len(reference) == 200_000


        def test_sleep(reference, engine):
            time.sleep(1.0)
            assert reference["b"].max() < 100
    """,
}


def generate(dest: Path) -> None:
    for name, text in FILES.items():
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=Path)
    args = parser.parse_args()
    if args.dest.exists() and any(args.dest.iterdir()):
        parser.error(f"{args.dest} is not empty")
    generate(args.dest)
    print(f"generated {args.dest}")


if __name__ == "__main__":
    main()

"""The command line's tests route the same generated photos as the service's (``tests/service/conftest.py``)."""

from tests.service.conftest import photos

__all__ = ["photos"]

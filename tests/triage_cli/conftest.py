"""The command line's tests route the same generated photos as the service's (``tests/service/conftest.py``)."""

from tests.service.conftest import kit, photos

__all__ = ["kit", "photos"]

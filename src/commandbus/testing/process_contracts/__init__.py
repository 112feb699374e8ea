"""Behaviour tests of ``ProcessRepository``, written once and run against every backend.

Subclass ``ProcessRepositoryContract`` as ``Test…`` and provide the ``backend`` fixture (a
backend whose ``processes`` is the repository under test; override ``repo`` otherwise)
and, for a real database, ``let_others_run``::

    class TestMemoryProcessRepository(ProcessRepositoryContract):
        @pytest.fixture
        async def backend(self):
            return InMemoryBackend(clock=VirtualClock())

Split in three: ``SeedApiContract`` (the seed's methods), ``EngineApiContract`` (the
batch methods the engine uses) and ``ActivityContract`` (what dashboards read);
``ProcessRepositoryContract`` is all of them.
"""

from commandbus.testing.process_contracts._base import RepositoryContractBase
from commandbus.testing.process_contracts.activity import ActivityContract
from commandbus.testing.process_contracts.engine_api import EngineApiContract
from commandbus.testing.process_contracts.seed_api import SeedApiContract


class ProcessRepositoryContract(SeedApiContract, EngineApiContract, ActivityContract):
    """The behaviour every ``ProcessRepository`` adapter must have."""


__all__ = [
    "ActivityContract",
    "EngineApiContract",
    "ProcessRepositoryContract",
    "RepositoryContractBase",
    "SeedApiContract",
]

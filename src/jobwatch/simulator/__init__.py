"""A wire-compatible S3 Control endpoint for S3 Batch Operations jobs.

Unmodified aiobotocore talks to it as it talks to AWS: ListJobs, DescribeJob,
UpdateJobStatus and CreateJob over REST-XML, with a job lifecycle that runs on
an injected clock, declarative scenarios, injectable faults and an admin API
under ``/_sim/``. See ``docs/simulator.md``.

Typical test use::

    sim = Simulator(builtin_scenario("demo"), ManualClock())
    async with SimulatorServer(sim) as server:
        ...  # a client with endpoint_url=server.url
        sim.advance(60)
        assert sim.request_count(operation="ListJobs", outcome="ok") > 0
"""

from ._faults import FAULT_KINDS, FaultSpec
from ._fleet import FLEET_REGIONS, fleet_account_id, generate_fleet
from ._model import JOB_STATUSES, OPERATIONS, TERMINAL_STATUSES, RequestKey, SimJobView
from ._push import EventPublisher, PushFaults, job_event
from ._scenario import (
    ACTIONS,
    AccountSpec,
    PhaseDurations,
    ReportSpec,
    Scenario,
    ScenarioError,
    SimJobSpec,
    TimelineEvent,
    builtin_scenario,
    load_scenario,
    scenario_from_dict,
)
from ._server import SimulatorServer, create_app, parse_listen, run_simulator
from ._world import DEFAULT_MAX_RESULTS, Simulator, UnknownJobError

__all__ = [
    "ACTIONS",
    "DEFAULT_MAX_RESULTS",
    "FAULT_KINDS",
    "FLEET_REGIONS",
    "JOB_STATUSES",
    "OPERATIONS",
    "TERMINAL_STATUSES",
    "AccountSpec",
    "EventPublisher",
    "FaultSpec",
    "PhaseDurations",
    "PushFaults",
    "ReportSpec",
    "RequestKey",
    "Scenario",
    "ScenarioError",
    "SimJobSpec",
    "SimJobView",
    "Simulator",
    "SimulatorServer",
    "TimelineEvent",
    "UnknownJobError",
    "builtin_scenario",
    "create_app",
    "fleet_account_id",
    "generate_fleet",
    "job_event",
    "load_scenario",
    "parse_listen",
    "run_simulator",
    "scenario_from_dict",
]

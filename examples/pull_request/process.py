"""The pull-request previews process of seeds 002/003, event-driven.

``PullRequestOpened`` starts one process per pull request (its business key is the
event's ``pr``) and deploys a preview environment per requested environment, in parallel
(one task, and one sub-state, per environment). ``PullRequestUpdated`` deploys the new
commit and tears down the previous commit's previews (a deploy still running is no longer
waited for; if it succeeds late, it is torn down too). ``PullRequestClosed`` tears down
what was deployed, ignores late results and ends the process. A deploy that fails tears
down the environments already deployed, in reverse order, and ends the process FAILED
(COMPENSATED once the teardowns replied).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from commandbus.process import ProcessStatus
from commandbus.process_manager import (
    Compensation,
    Decision,
    EventSourcedProcessManager,
    Fact,
    ProcessEvent,
    ProcessLocator,
    Task,
)

DOMAIN = "previews"


@dataclass
class Previews:
    """One sub-state per environment: ``deploying`` / ``deployed`` / ``failed`` /
    ``torn_down``, the run of its deploy task, and its URL once deployed."""

    pr: str = ""
    commit: str = ""
    environments: dict[str, dict[str, Any]] = field(default_factory=dict)
    updates: int = 0
    closed: bool = False


def deploy(pr: str, env: str, commit: str) -> Task:
    return Task(
        task_id=f"deploy-{env}",
        command_type="DeployPreview",
        data={"pr": pr, "env": env, "commit": commit},
        branch=env,
        timeout=600,
        compensation=Compensation("TearDownPreview", {"pr": pr, "env": env, "commit": commit}),
    )


class PullRequestPreviews(EventSourcedProcessManager[Previews]):
    process_type = "pr_previews"
    domain = DOMAIN
    categories = ("pullrequest",)
    starts_on = ("PullRequestOpened",)
    reacts_to = ("PullRequestUpdated", "PullRequestClosed")
    locator = ProcessLocator.by_field("pr")
    snapshot_every = 20

    def initial_state(self) -> Previews:
        return Previews()

    def evolve(self, state: Previews, event: ProcessEvent) -> Previews:
        data = event.data
        if event.event_type == "PullRequestOpened" and not state.pr:
            envs = {
                env: {"status": "deploying", "url": None, "run": 0} for env in data["environments"]
            }
            return Previews(pr=data["pr"], commit=data["commit"], environments=envs)
        if event.event_type == "PullRequestUpdated":
            state.commit, state.updates = data["commit"], state.updates + 1
            for env in state.environments.values():
                env["status"] = "deploying"
        elif event.event_type == "PullRequestClosed":
            state.closed = True
        elif event.event_type == "TransitionPlanned" and data["compensates"] is None:
            state.environments[data["task_id"].removeprefix("deploy-")]["run"] = data["run"]
        elif event.event_type == "TaskCompleted" and data["compensates"] is None:
            env = state.environments[data["task_id"].removeprefix("deploy-")]
            env.update(status="deployed", url=data["result"]["url"])
        elif event.event_type == "TaskFailed" and data["compensates"] is None:
            state.environments[data["task_id"].removeprefix("deploy-")]["status"] = "failed"
        elif event.event_type == "TaskCompleted":
            env = state.environments[data["compensates"].removeprefix("deploy-")]
            if data["run"] == env["run"]:  # the teardown of the current deploy
                env["status"] = "torn_down"
        return state

    def decide(self, state: Previews, event: ProcessEvent) -> Decision:
        if event.event_type == "PullRequestOpened":
            if event.version > 2:  # opened again (the start event is version 2): nothing new
                return Decision()
            deploys = [deploy(state.pr, env, state.commit) for env in state.environments]
            return Decision(commands=deploys, state_name="deploying")
        if event.event_type == "PullRequestUpdated":
            deploys = [deploy(state.pr, env, state.commit) for env in state.environments]
            return Decision(
                [Fact("RedeployRequested", {"commit": state.commit})],
                cancel_tasks=[t.task_id for t in deploys],  # the old commit's, still running
                compensate="all",  # tear down the old commit's previews
                commands=deploys,
                state_name="deploying",
            )
        if event.event_type == "PullRequestClosed":
            return Decision(compensate="all", finish=ProcessStatus.COMPLETED, state_name="closed")
        if event.event_type == "TaskCompleted":
            if all(env["status"] == "deployed" for env in state.environments.values()):
                return Decision(state_name="previewing")
            return Decision()
        if event.event_type == "TaskFailed":
            return Decision(
                compensate="all",
                finish=ProcessStatus.FAILED,
                error_code="DEPLOY_FAILED",
                error_message=f"{event.data['task_id']}: {event.data.get('error_message')}",
                state_name="failed",
            )
        if event.event_type == "ProcessCancelled":
            return Decision(compensate="all", finish=ProcessStatus.CANCELED)
        return Decision()

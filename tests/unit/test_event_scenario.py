"""``EventProcessScenario`` on the pull-request previews example: the seed's story told
as given/when/then, and the harness's own failures."""

from __future__ import annotations

import pytest
from examples.pull_request import PullRequestPreviews

from commandbus.process import ProcessStatus
from commandbus.testing.event_scenario import EventProcessScenario, ScenarioAssertionError

OPENED = {"pr": "acme/web#17", "commit": "a1", "environments": ["staging", "qa"]}


async def test_a_failed_branch_tears_down_the_deployed_one() -> None:
    scenario = EventProcessScenario(PullRequestPreviews)
    await scenario.publish("PullRequestOpened", OPENED)
    scenario.expect_commands("DeployPreview", "DeployPreview")
    scenario.expect_event("StateNamed", state_name="deploying")
    await scenario.reply_success({"url": "https://staging"}, task_id="deploy-staging")
    scenario.expect_no_command()
    assert scenario.state.environments["staging"]["status"] == "deployed"
    await scenario.reply_failed("QUOTA", "no capacity", task_id="deploy-qa")
    scenario.expect_command("TearDownPreview", data={"env": "staging"}, compensation=True)
    scenario.expect_status(ProcessStatus.COMPENSATING)
    await scenario.reply_success(task_id="deploy-staging")
    scenario.expect_status(ProcessStatus.COMPENSATED, error_code="DEPLOY_FAILED")
    scenario.expect_event("ProcessFinished", status="COMPENSATED")


async def test_a_timeout_fails_the_task_and_a_late_success_is_undone() -> None:
    scenario = EventProcessScenario(PullRequestPreviews)
    await scenario.publish("PullRequestOpened", {**OPENED, "environments": ["qa"]})
    deploy = scenario.expect_command("DeployPreview", task_id="deploy-qa")
    await scenario.advance(599)
    scenario.expect_status(ProcessStatus.WAITING_FOR_REPLY)
    await scenario.advance(2)
    scenario.expect_event("TaskFailed", task_id="deploy-qa", reason="TIMEOUT")
    scenario.expect_status(ProcessStatus.FAILED, error_code="DEPLOY_FAILED")
    # The deploy finishes after all: what it set up is torn down.
    await scenario.reply_success({"url": "https://qa"}, command=deploy)
    scenario.expect_event("TaskIgnored", task_id="deploy-qa", why="no longer awaited")
    scenario.expect_command("TearDownPreview", data={"env": "qa"}, compensation=True)
    scenario.expect_status(ProcessStatus.FAILED)


async def test_expectations_fail_with_the_story() -> None:
    scenario = EventProcessScenario(PullRequestPreviews)
    await scenario.publish("PullRequestOpened", OPENED)
    with pytest.raises(ScenarioAssertionError, match="expected one new command") as failed:
        scenario.expect_command("DeployPreview")
    assert "TransitionPlanned" in str(failed.value)
    with pytest.raises(ScenarioAssertionError, match="say which task"):
        await scenario.reply_success()
    with pytest.raises(ScenarioAssertionError, match="expected status COMPLETED"):
        scenario.expect_status(ProcessStatus.COMPLETED)


async def test_events_of_the_processes_own_streams_are_never_inputs() -> None:
    scenario = EventProcessScenario(PullRequestPreviews)
    await scenario.publish("PullRequestOpened", OPENED)
    version = scenario.instance.version
    changed = await scenario.publish(
        "PullRequestUpdated", {"pr": OPENED["pr"], "commit": "b2"}, stream="pr_previews-x"
    )
    assert changed == [] and scenario.instance.version == version
    scenario.expect_no_command()

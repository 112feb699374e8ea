"""The pull-request previews process (seeds 002/003): event-driven, parallel branches."""

from examples.pull_request.handlers import PreviewCloud
from examples.pull_request.process import Previews, PullRequestPreviews

__all__ = ["PreviewCloud", "Previews", "PullRequestPreviews"]

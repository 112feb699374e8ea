"""Operator tools."""

from commandbus.ops.troubleshooting import TroubleshootingQueue

__all__ = ["TroubleshootingQueue"]

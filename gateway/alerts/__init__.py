"""Operator alerts: the sink a serving replica hands to the code that raises them
(`hub.Alerter`, an `gateway.events.Events`) and the webhook sender (`sender.Webhooks`).
The Redis side (who sends, the recent list) is `gateway.state.alerts`."""

from gateway.alerts.hub import Alerter
from gateway.alerts.sender import Webhooks

__all__ = ["Alerter", "Webhooks"]

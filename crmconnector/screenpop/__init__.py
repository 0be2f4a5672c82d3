"""Screen-pop decisions: what the agent's console (or a Salesforce softphone) opens for a match."""
from crmconnector.screenpop.decide import PopSettings, ScreenPop, decide, ACTIONS

__all__ = ["PopSettings", "ScreenPop", "decide", "ACTIONS"]

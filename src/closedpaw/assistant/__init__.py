"""The assistant (layer L4): conversations and the tool loop. It imports the gate and the
providers, never the sandbox, the vault or executors: every tool call is a gate action."""

from closedpaw.assistant.loop import SYSTEM_PROMPT, Assistant, TurnLimits, TurnOutcome
from closedpaw.assistant.store import ConversationRecord, ConversationStore, MessageRecord
from closedpaw.assistant.tools import TOOLS, tool_specs

__all__ = ["SYSTEM_PROMPT", "TOOLS", "Assistant", "ConversationRecord", "ConversationStore",
           "MessageRecord", "TurnLimits", "TurnOutcome", "tool_specs"]

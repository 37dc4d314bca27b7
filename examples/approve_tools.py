"""Human in the loop: a tool that needs approval before it runs.

The execution pauses at ``tool_confirmation_required``; the answer comes
through ``handle.submit_tool_result`` — here from a listener that plays the
person, approving one call with edited arguments and denying another.
"""

from __future__ import annotations

import trio

from trio_session import (
    Agent,
    Reply,
    ScriptedModel,
    StreamEvent,
    TextBlock,
    ToolConfirmationRequired,
    open_session,
    tool,
)


@tool(requires_confirmation=True, confirmation_message="Delete {path}?")
def delete_file(path: str) -> str:
    """Delete a file.

    Args:
        path: The file to delete.
    """
    return f"deleted {path}"


model = ScriptedModel(
    [
        Reply(
            "I'll clean up.",
            tool_calls=[
                ("delete_file", {"path": "/tmp/cache.db"}),
                ("delete_file", {"path": "/home/me/thesis.tex"}),
            ],
        ),
        "Removed the cache; I left your thesis alone.",
    ]
)


async def main() -> list[str]:
    decisions: list[str] = []
    async with open_session(Agent(model, tools=[delete_file])) as session:
        handle = await session.send("Free some disk space.")

        def person(event: StreamEvent) -> None:
            assert isinstance(event, ToolConfirmationRequired)
            print(f"? {event.message}")
            if event.input["path"].startswith("/tmp/"):
                # Approve, but point it somewhere narrower.
                handle.submit_tool_result(
                    event.tool_use_id,
                    approved=True,
                    modified_arguments={"path": "/tmp/cache.db-wal"},
                )
                decisions.append("approved with edits")
            else:
                handle.submit_tool_result(event.tool_use_id, approved=False, reason="not that")
                decisions.append("denied")

        handle.events.on("tool_confirmation_required", person)
        async for event in handle:
            if event.type == "tool_result":
                status = "error" if event.is_error else "ok"
                text = "".join(b.text for b in event.content if isinstance(b, TextBlock))
                print(f"  {event.name}: {status}: {text}")
        print((await handle.result).response)
    return decisions


if __name__ == "__main__":
    trio.run(main)

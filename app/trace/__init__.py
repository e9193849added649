"""Per-ticket traces: the ordered timeline of what happened on a ticket and its session.

- `build_trace(client, store, ticket, scrubber)` -> `Trace` (`app.trace.build`)
- `render(trace, "text" | "json" | "jsonl")` (`app.trace.render`)
- `find_ticket(store, "#42" | "T123#42" | slack link | "sesn_...")` (`app.trace.lookup`)
- `record_approval` / `record_follow` / `record_webhook` / `record_stream`: what only we know
  (`app.trace.record`)
"""

FORMATS = ("text", "json", "jsonl")  # what `support-agent trace --format` prints

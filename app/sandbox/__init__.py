"""The emulated world: Slack, Managed Agents and the sandbox page, for tests, benchmarks and
`support-agent sandbox`. The service under `app/` never imports any of it.

- `app.sandbox.slack`: the Slack emulator (Web API, events, interactivity, rate limits), held to
  the method reference in `slack/contracts/slack_methods.json`.
- `app.sandbox.agents`: the Managed Agents emulator (agents, environments, vaults, sessions and
  their event streams) with the scenario language that scripts its turns.
- `app.sandbox.page`: the sandbox page and the `support-agent sandbox` command.
- `stack`, `app_runner`, `server`: run the app against the emulators, in process or apart.
"""

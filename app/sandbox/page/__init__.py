"""The sandbox page (`web.py`: a Slack-like channel in the browser) and `support-agent sandbox`
(`local.py` starts the emulators, the app and the page; `cli.py` is the command; `demo.py` is
the scripted agent used without an API key).

Nothing is imported here eagerly: `support-agent sandbox --help` must stay quick.
"""

"""The Telegram bridge: owners talk to the same companion (persona, memory, brain) from a Telegram chat, by text
and voice notes. `runner` starts it inside the server; importing this package needs no Telegram library."""

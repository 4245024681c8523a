"""`instill serve`: the OpenAI-compatible server and its chat page.

server.py (the FastAPI app), protocol.py (request bodies), served.py (the models by name),
batching.py (dynamic batches), rows.py (per-row streaming generation, also used by `instill chat`),
toolcalls.py (tool calls in the text), static/chat.html (the page at GET /).
"""

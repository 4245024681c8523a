"""`instill board`: the browser front end. Build a config from the schema, preview the data as training
sees it, check it with the doctor, launch and watch runs, compare them, evaluate, chat, export.

Why instill's own FastAPI app with one plain HTML/JS page (static/board.html) rather than Gradio (what
LLaMA Board uses): FastAPI and uvicorn are already dependencies (`instill serve`), so the board adds no
heavy package and runs in one process; the page needs nothing from the network; the security model is
`instill serve`'s (127.0.0.1 by default, a token when bound elsewhere); and everything the page shows
comes from a JSON API that tests drive directly.

The board is an application: it imports config, data, doctor and the run-file readers, and runs
training, evaluation, export and serving only as subprocesses (`instill train ...`), so a run started
here is the same as one started in a terminal, and outlives the board.
"""

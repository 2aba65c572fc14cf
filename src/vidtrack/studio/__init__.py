"""``vidtrack studio``: a local web app over the interactive session (click, see, propagate, correct, export).

:mod:`.server` (FastAPI routes) over :mod:`.live` (sessions per browser tab and their propagation jobs),
:mod:`.actions` (every click as a replayable JSON action), :mod:`.project` (the project folder that survives a
restart), :mod:`.paths` (what a shared server may open) and :mod:`.wire` (masks as run lengths for the page);
``static/`` holds the page itself. See docs/STUDIO.md.
"""

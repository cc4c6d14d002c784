"""``hpsweep dashboard``: a read-only live web view of the results database.

``app.create_app`` builds the Starlette application (pages, JSON endpoints and
the static assets shipped in ``static/``), ``guard`` holds what keeps it safe
(GET/HEAD only, token, host check, security headers), ``payload`` shapes the
storage reads for the pages, ``server.serve`` runs it on uvicorn. Needs the
``dashboard`` extra: ``pip install -e '.[dashboard]'`` in a clone.
"""

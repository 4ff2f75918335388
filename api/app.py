"""REST API and notifier in one ASGI app: ``uvicorn api.app:app`` (or ``python -m api``)."""

from api.factory import create_app

app = create_app()

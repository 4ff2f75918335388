"""The REST API alone: ``uvicorn api.rest:app`` (run notifiers separately)."""

from api.factory import create_rest_app

app = create_rest_app()

"""The web layer: the Flask app factory, its blueprints, validation, serialisation, OpenAPI and assets."""

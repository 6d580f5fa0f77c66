"""The HTTP adapter: the Flask app, its routes and authentication, error rendering, OpenAPI."""

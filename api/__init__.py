"""The HTTP router: Flask app, classifier heads, and the inference database layer."""
